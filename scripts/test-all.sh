#!/usr/bin/env bash
# The full test suite: unit, property, fixture-replay and black-box system tests (the
# real binary on loopback), every benchmark once so its figures are in the log, 60 s of
# fuzzing (bundle reader, Authorization header and key parser), and the packaging test
# (static reproducible release, .deb/.rpm, unit hardening score, booted install under
# systemd-nspawn). Ends with one summary line over all cargo tests.
set -euo pipefail
cd "$(dirname "$0")/.."
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
step() { echo "== [${SECONDS}s into the suite] $*"; }
step "cargo test"
cargo test --workspace --all-targets 2>&1 | tee "$log"
step "cargo bench"
cargo bench --workspace
step "fuzzing, 60 s"
fuzz_log="$(mktemp)"
if ! bash scripts/fuzz.sh 60 >"$fuzz_log" 2>&1; then
    tail -n 60 "$fuzz_log"
    echo "fuzzing found a failure"
    exit 1
fi
grep -E "^Done [0-9]+ runs" "$fuzz_log" || tail -n 3 "$fuzz_log"
step "packaging test"
bash scripts/test-packaging.sh
step "done"
passed=$(grep -E '^test result:' "$log" | awk '{s += $4} END {print s + 0}')
failed=$(grep -E '^test result:' "$log" | awk '{s += $6} END {print s + 0}')
echo "summary: ${passed} passed, ${failed} failed"
