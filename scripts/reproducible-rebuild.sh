#!/usr/bin/env bash
# Builds the appliance crates (the dg-appliance package: library and binary) a second time,
# as scripts/release.sh builds them, and checks that the binary is byte for byte the one
# built before (the release is reproducible: scripts/release-env.sh).
# Usage: scripts/reproducible-rebuild.sh FIRST_BINARY
# FIRST_BINARY is a copy of the first build's binary, kept outside the target directory: the
# rebuild removes and makes again the one inside it, so nothing may run that one meanwhile.
# Its dependencies are not rebuilt (they come from crates.io, pinned by Cargo.lock).
set -euo pipefail
cd "$(dirname "$0")/.."
first="$1"
# shellcheck source=scripts/release-env.sh
source scripts/release-env.sh
target="$DG_RELEASE_TARGET"
cargo clean --release -p dg-appliance --target "$target"
cargo build --release --locked -p dg-appliance --target "$target"
first_sha="$(sha256sum "$first" | awk '{print $1}')"
again_sha="$(sha256sum "target/$target/release/dg-appliance" | awk '{print $1}')"
[ "$first_sha" = "$again_sha" ] || { echo "binary differs between two builds: $first_sha, then $again_sha"; exit 1; }
echo "reproducible: binary $first_sha"
