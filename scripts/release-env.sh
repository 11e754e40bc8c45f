# Sourced, not run: the build settings of the shipped binary (static glibc, remapped paths,
# stripped, no debug info) for the release build and for the benchmarks. Both use them so
# the benchmarks measure the binary that ships, and cargo builds the workspace once for both
# (the `bench` profile is `release` unchanged, and cargo shares artifacts between profiles
# whose settings are equal).
# SOURCE_DATE_EPOCH (default: the last commit's time) fixes every timestamp; C build
# scripts read it too, so it is set for both builds alike.
# Sets: DG_RELEASE_TARGET, SOURCE_DATE_EPOCH, RUSTFLAGS, CARGO_PROFILE_RELEASE_STRIP,
# CARGO_PROFILE_RELEASE_DEBUG.
DG_RELEASE_TARGET=x86_64-unknown-linux-gnu
DG_RELEASE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git -C "$DG_RELEASE_ROOT" log -1 --format=%ct 2>/dev/null || echo 0)}"
export RUSTFLAGS="-C target-feature=+crt-static --remap-path-prefix=${DG_RELEASE_ROOT}=/build/dg-appliance --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo"
export CARGO_PROFILE_RELEASE_STRIP=symbols
export CARGO_PROFILE_RELEASE_DEBUG=false
