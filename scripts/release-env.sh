# Sourced, not run: the build settings of the shipped binary (static glibc, remapped paths,
# stripped, no debug info) for the release build and for the benchmarks. Both use them so
# the benchmarks measure the binary that ships, and cargo builds the workspace once for both
# (the `bench` profile is `release` unchanged, and cargo shares artifacts between profiles
# whose settings are equal).
# Two fixed times make the release reproducible:
# - DG_PACKAGE_EPOCH (default: SOURCE_DATE_EPOCH if set, else the last commit's time): the
#   packages' timestamps (file times in the .deb and .rpm, the generated files);
# - SOURCE_DATE_EPOCH for the compilers = DG_BUILD_EPOCH (default: a constant). C build
#   scripts (cc-rs) rebuild whenever it changes, so a per-commit value rebuilt every C
#   dependency (SQLite, zstd, ring, the AWS-LC modules) at every commit; a constant keeps the
#   build reproducible and a kept target directory warm.
# Sets: DG_RELEASE_TARGET, DG_PACKAGE_EPOCH, SOURCE_DATE_EPOCH, RUSTFLAGS,
# CARGO_PROFILE_RELEASE_STRIP, CARGO_PROFILE_RELEASE_DEBUG.
DG_RELEASE_TARGET=x86_64-unknown-linux-gnu
DG_RELEASE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export DG_PACKAGE_EPOCH="${DG_PACKAGE_EPOCH:-${SOURCE_DATE_EPOCH:-$(git -C "$DG_RELEASE_ROOT" log -1 --format=%ct 2>/dev/null || echo 0)}}"
# 2026-01-01T00:00:00Z.
export SOURCE_DATE_EPOCH="${DG_BUILD_EPOCH:-1767225600}"
export RUSTFLAGS="-C target-feature=+crt-static --remap-path-prefix=${DG_RELEASE_ROOT}=/build/dg-appliance --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo"
export CARGO_PROFILE_RELEASE_STRIP=symbols
export CARGO_PROFILE_RELEASE_DEBUG=false
