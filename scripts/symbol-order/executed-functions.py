#!/usr/bin/env python3
"""The functions a callgrind profile saw run, hottest first (their own instructions), one
mangled name per line: the link order of the shipped binary (appliance/daemon/build.rs).

Usage: executed-functions.py CALLGRIND_OUT [CALLGRIND_OUT ...] > appliance/daemon/link/symbol-order.txt
Profiles are made with `valgrind --tool=callgrind --demangle=no` (scripts/symbol-order.sh).
"""
import collections
import re
import sys

NAME = re.compile(r"\((\d+)\)(?: (.*))?")
# callgrind marks a function's recursion levels as name'2, name'3, ...: one symbol.
RECURSION = re.compile(r"'\d+$")


def main(paths):
    names = {}
    cost = collections.Counter()

    def name_of(token):
        # callgrind names a function once, as "(id) name", and by "(id)" after that.
        match = NAME.match(token)
        if not match:
            return token
        if match.group(2) is not None:
            names[match.group(1)] = match.group(2)
        return names.get(match.group(1), match.group(1))

    for path in paths:
        current, after_call = None, False
        with open(path, errors="replace") as profile:
            for line in profile:
                line = line.rstrip("\n")
                if line.startswith("fn="):
                    current, after_call = name_of(line[3:]), False
                    cost[current] += 0
                elif line.startswith("cfn="):
                    cost[name_of(line[4:])] += 0
                elif line.startswith("calls="):
                    # The next cost line is the call's (the callee's), not this function's.
                    after_call = True
                elif current is not None and line[:1] and (line[0].isdigit() or line[0] in "+-*"):
                    if after_call:
                        after_call = False
                        continue
                    fields = line.split()
                    if len(fields) >= 2 and fields[1].isdigit():
                        cost[current] += int(fields[1])
    symbols = collections.Counter()
    for name, instructions in cost.items():
        symbols[RECURSION.sub("", name)] += instructions
    for name, _ in sorted(symbols.items(), key=lambda item: (-item[1], item[0])):
        if not name.startswith("0x"):
            print(name)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
