#!/usr/bin/env bash
# The full test suite: unit, property, fixture-replay and black-box system tests (the
# real binary on loopback), then every benchmark once so its figures are in the log.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --all-targets
cargo bench --workspace
bash scripts/fuzz.sh 60
