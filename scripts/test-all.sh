#!/usr/bin/env bash
# The full test suite: unit, property, fixture-replay and black-box system tests (the
# real binary on loopback), every benchmark once so its figures are in the log, 60 s of
# fuzzing (bundle reader, Authorization header and key parser), and the packaging test
# (static reproducible release, .deb/.rpm, unit hardening score, booted install under
# systemd-nspawn). Ends with one summary line over all cargo tests.
#
# Order, for time: everything is compiled first, while the cargo tools install and the
# Debian root for the install test downloads in the background (they fill the cores'
# idle time: downloads, single-threaded links). Nothing runs in the background once the
# tests and benchmarks run, so their timings meet a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
log="$(mktemp)"
prep_dir="$(mktemp -d)"
background=()
cleanup() {
    for pid in "${background[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$log" "$prep_dir"
}
trap cleanup EXIT
step() { echo "== [${SECONDS}s into the suite] $*"; }
bench() { (source scripts/release-env.sh && cargo bench --workspace --target "$DG_RELEASE_TARGET" "$@"); }

step "in the background: cargo tools (scripts/install-tools.sh), Debian root (scripts/debian-root.sh)"
bash scripts/install-tools.sh >"$prep_dir/tools.log" 2>&1 &
background+=("$!")
bash scripts/debian-root.sh >"$prep_dir/root.log" 2>&1 &
background+=("$!")
step "build: tests (debug)"
cargo test --workspace --all-targets --no-run
step "build: benchmarks (release settings, shared with the packaging step's release build)"
bench --no-run
step "waiting for the background jobs"
for pid in "${background[@]}"; do
    wait "$pid" || { tail -n 40 "$prep_dir"/*.log; echo "a background job failed (its log is above)"; exit 1; }
done
background=()

step "cargo test"
cargo test --workspace --all-targets 2>&1 | tee "$log"
step "cargo bench"
bench
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
