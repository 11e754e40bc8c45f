#!/usr/bin/env bash
# Checks that every crate the release binary is built from has the same features in the
# benchmark build (the workspace with its dev-dependencies). CI builds the benchmarks first
# and the shipped binary after them in the same target directory; a crate whose features
# differ is compiled twice, and a difference in a proc-macro's dependencies (syn) compiles
# the whole tree twice. The fix for a reported crate: the feature-alignment line in
# appliance/daemon/Cargo.toml, or a `default` feature dropped from a workspace crate.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${DG_RELEASE_TARGET:-x86_64-unknown-linux-gnu}"
tree() { cargo tree --locked --target "$target" -f '{p} [{f}]' --prefix none "$@"; }
release="$(mktemp)"
bench="$(mktemp)"
trap 'rm -f "$release" "$bench"' EXIT
tree -p dg-appliance -e normal,build >"$release"
tree --workspace -e normal,build,dev >"$bench"
python3 - "$release" "$bench" <<'PY'
import sys

def features(path):
    crates = {}
    for line in open(path):
        line = line.strip().removesuffix(" (*)")
        if not line:
            continue
        name, _, rest = line.partition(" [")
        crates.setdefault(name, set()).update(f for f in rest.rstrip("]").split(",") if f)
    return crates

release, bench = features(sys.argv[1]), features(sys.argv[2])
differ = [name for name in sorted(release) if name in bench and release[name] != bench[name]]
for name in differ:
    print(f"{name}: benchmark build only {sorted(bench[name] - release[name])}, "
          f"release build only {sorted(release[name] - bench[name])}")
if differ:
    sys.exit(f"feature alignment: {len(differ)} crates would be compiled twice in CI")
print(f"feature alignment: the {len(release)} crates of the release build have the same features in the benchmark build")
PY
