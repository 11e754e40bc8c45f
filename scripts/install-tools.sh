#!/usr/bin/env bash
# Installs the cargo tools the suite needs, those not on PATH yet: cargo-fuzz (fuzzing),
# cargo-deb and cargo-generate-rpm (packages). They are built for this machine, without the
# release flags (+crt-static cannot build their proc-macros), into one shared target
# directory so the dependencies they have in common compile once.
# Usage: scripts/install-tools.sh [tool ...]   (default: all three)
set -euo pipefail
cd "$(dirname "$0")/.."
tools=("$@")
[ "${#tools[@]}" -gt 0 ] || tools=(cargo-fuzz cargo-deb cargo-generate-rpm)
missing=()
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[ "${#missing[@]}" -eq 0 ] && exit 0
env -u RUSTFLAGS -u CARGO_PROFILE_RELEASE_STRIP -u CARGO_PROFILE_RELEASE_DEBUG \
    cargo install --locked --target-dir target/tools "${missing[@]}"
