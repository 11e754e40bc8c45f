#!/usr/bin/env python3
"""Fails when a crate's modules import each other in a cycle.

For every Rust crate given (default: the storage crate and the daemon), each file's
module path is read from its place under src/, and every path it names through
`crate::`, `super::` or `self::` (in `use` lines and in code) is resolved to a module.
Two modules that share a parent folder depend on each other when code under one names
something under the other; a child naming its own ancestors is not an edge (a folder's
mod.rs holds what its children share). Prints each module's imports, then every cycle
found, and exits 1 if there is one.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_CRATES = ["storage", "appliance/daemon", "appliance/identity"]
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def module_path(src: pathlib.Path, file: pathlib.Path) -> tuple:
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def expand_groups(text: str) -> list:
    """`crate::a::{b, c::d}` becomes `crate::a::b`, `crate::a::c::d` (nested groups too)."""
    paths = []
    for match in re.finditer(rf"\b(crate|super|self)((?:::{IDENT})*)::\{{", text):
        start = match.end()
        depth, i = 1, start
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        inner = text[start : i - 1]
        prefix = match.group(1) + match.group(2)
        for item in split_top(inner):
            item = item.strip()
            if not item:
                continue
            if "{" in item:
                paths.extend(expand_groups(f"{prefix}::{item}"))
            else:
                paths.append(f"{prefix}::{item}")
    return paths


def split_top(inner: str) -> list:
    items, depth, current = [], 0, ""
    for ch in inner:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += ch
    items.append(current)
    return items


def referenced(text: str) -> list:
    paths = expand_groups(text)
    paths += [m.group(0) for m in re.finditer(rf"\b(crate|super|self)(::{IDENT})+", text)]
    return paths


def resolve(path: str, here: tuple, modules: set) -> tuple:
    segs = [s.split(" ")[0] for s in path.split("::")]
    if segs[0] == "crate":
        base, rest = [], segs[1:]
    elif segs[0] == "self":
        base, rest = list(here), segs[1:]
    else:
        # `super` in a mod.rs names the folder's parent; in a leaf file, the file's folder
        # (the file's own module path already ends one level deeper).
        base, rest = list(here), segs
        while rest and rest[0] == "super":
            base, rest = base[:-1], rest[1:]
    target = tuple(base + rest)
    # The longest prefix that is a module.
    while target and target not in modules:
        target = target[:-1]
    return target


def check(crate: str) -> list:
    src = ROOT / crate / "src"
    files = sorted(src.rglob("*.rs"))
    modules = {module_path(src, f) for f in files}
    imports = {}
    for file in files:
        here = module_path(src, file)
        text = strip_comments(file.read_text())
        targets = set()
        for path in referenced(text):
            target = resolve(path, here, modules)
            if target != here:
                targets.add(target)
        imports[here] = targets
    edges = {}
    for here, targets in imports.items():
        for target in targets:
            common = 0
            while common < min(len(here), len(target)) and here[common] == target[common]:
                common += 1
            if common >= len(here) or common >= len(target):
                continue  # an ancestor or a descendant: not a sibling edge
            a, b = here[: common + 1], target[: common + 1]
            edges.setdefault(a, set()).add(b)
    print(f"## {crate}")
    for here in sorted(imports):
        names = sorted("::".join(t) or "(root)" for t in imports[here])
        print(f"  {'::'.join(here) or '(root)'} -> {', '.join(names) if names else '-'}")
    return [(crate, cycle) for cycle in cycles(edges)]


def cycles(edges: dict) -> list:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def main() -> int:
    crates = sys.argv[1:] or DEFAULT_CRATES
    found = []
    for crate in crates:
        found += check(crate)
    for crate, cycle in found:
        print(f"module cycle in {crate}: {' <-> '.join('::'.join(m) for m in cycle)}")
    if found:
        return 1
    print(f"no module cycles in {', '.join(crates)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
