#!/usr/bin/env bash
# Bounded fuzzing of the bundle reader with cargo-fuzz (libFuzzer). The toolchain here is
# stable, so cargo-fuzz runs with RUSTC_BOOTSTRAP=1 and without a sanitizer.
# Usage: scripts/fuzz.sh [seconds]   (default 60)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
corpus="$PWD/fuzz/corpus/bundle_reader"
mkdir -p "$corpus"
DG_WRITE_FUZZ_SEEDS="$corpus" cargo test -q -p dg-storage --test bundle_hostile -- --exact write_fuzz_seeds
cd fuzz
RUSTC_BOOTSTRAP=1 cargo fuzz run bundle_reader --sanitizer none "$corpus" -- -max_total_time="$seconds" -rss_limit_mb=2048
