#!/usr/bin/env bash
# The full test suite: unit, property, fixture-replay and system tests, then one quick
# pass of every benchmark so its figures are printed in the log.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --all-targets --release
cargo bench --workspace
