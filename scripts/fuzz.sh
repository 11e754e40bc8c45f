#!/usr/bin/env bash
# Bounded fuzzing with cargo-fuzz (libFuzzer): the bundle reader (two thirds of the time)
# and the Authorization header / API key parser and policy decision (one third). The toolchain here is
# stable, so cargo-fuzz runs with RUSTC_BOOTSTRAP=1 and without a sanitizer.
# Usage: scripts/fuzz.sh [seconds]   (default 60)
#        scripts/fuzz.sh --build     (only compile the targets, as a run would)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-tools.sh cargo-fuzz
# The fuzz crate is its own workspace with its own lock file: a stale one would be resolved
# again at every run (newer versions each time), so a stale one stops the run instead.
(cd fuzz && cargo metadata --locked --format-version 1 >/dev/null) || {
    echo "fuzz/Cargo.lock does not match the workspace's dependencies: run 'cargo update -w' in fuzz/ and commit it"
    exit 1
}
# The fuzz build's own target directory lies in the workspace's (target/fuzz), which CI
# keeps between runs: under fuzz/ (cargo-fuzz's default) every clean clone compiled all of
# the fuzz targets' dependencies again, beside the other builds.
mkdir -p target/fuzz
fuzz_target_dir="$(realpath target/fuzz)"
if [ "${1:-}" = "--build" ]; then
    cd fuzz && RUSTC_BOOTSTRAP=1 exec cargo fuzz build --sanitizer none --target-dir "$fuzz_target_dir"
fi
seconds="${1:-60}"
corpus="$PWD/fuzz/corpus/bundle_reader"
mkdir -p "$corpus"
DG_WRITE_FUZZ_SEEDS="$corpus" cargo test -q -p dg-storage --test bundle_hostile -- --exact write_fuzz_seeds
cd fuzz
RUSTC_BOOTSTRAP=1 cargo fuzz run bundle_reader --sanitizer none --target-dir "$fuzz_target_dir" "$corpus" -- -max_total_time="$((seconds * 2 / 3))" -rss_limit_mb=2048
auth_corpus="$PWD/corpus/auth_header"
mkdir -p "$auth_corpus"
printf 'Bearer dgk_0123456789abcdef_%064d_00000000' 0 > "$auth_corpus/seed-key"
printf 'bearer  dgk_' > "$auth_corpus/seed-prefix"
RUSTC_BOOTSTRAP=1 cargo fuzz run auth_header --sanitizer none --target-dir "$fuzz_target_dir" "$auth_corpus" -- -max_total_time="$((seconds / 3 + 1))" -rss_limit_mb=1024
