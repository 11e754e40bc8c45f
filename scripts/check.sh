#!/usr/bin/env bash
# The quick local loop (`just check`; under 5 minutes on a warm build on the 2-core
# reference machine): format check, lints, the module cycle check, and the unit and
# property tests with the request path's own tests. No system tests, benchmarks, fuzzing
# or packaging: `bash scripts/test-all.sh` (`just test`) runs everything.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { echo "== [${SECONDS}s] $*"; }
step "cargo fmt --check"
cargo fmt --all --check
step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
step "module cycles"
python3 scripts/check-module-cycles.py | tail -n 1
step "unit and property tests"
cargo test --workspace --lib --bins -q
cargo test -q -p dg-engine -p dg-storage -p dg-identity -p dg-providers --tests
cargo test -q -p dg-appliance --test request_path --test clock --test billing
step "done"
