# Sourced, not run: the build settings of the shipped binary (static glibc, remapped paths,
# no debug info) for the release build and for the benchmarks. Both use them so
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
# The flags name no path of the checkout, only the target directory's real path and cargo's
# home. Cargo keeps the flags in every crate's fingerprint (not in its file name), so flags that
# named the clone's path made every dependency compile again whenever the same kept target
# directory was reached from another clone (CI clones to a new place; a rehearsal to another):
# a "warm" release build took 757 s against 924 cold. The workspace's own sources need no
# remapping: cargo hands them to rustc by paths relative to the workspace root. Dependencies'
# generated sources (OUT_DIR) lie in the target directory, hence its remapping; cargo is
# pointed at its real path (CARGO_TARGET_DIR) because target/ is often a link.
# Sets: DG_RELEASE_TARGET, DG_PACKAGE_EPOCH, SOURCE_DATE_EPOCH, CARGO_TARGET_DIR, RUSTFLAGS,
# CARGO_PROFILE_RELEASE_STRIP, CARGO_PROFILE_RELEASE_DEBUG.
DG_RELEASE_TARGET=x86_64-unknown-linux-gnu
DG_RELEASE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$DG_RELEASE_ROOT/target"
CARGO_TARGET_DIR="$(realpath "$DG_RELEASE_ROOT/target")"
export CARGO_TARGET_DIR
export DG_PACKAGE_EPOCH="${DG_PACKAGE_EPOCH:-${SOURCE_DATE_EPOCH:-$(git -C "$DG_RELEASE_ROOT" log -1 --format=%ct 2>/dev/null || echo 0)}}"
# 2026-01-01T00:00:00Z.
export SOURCE_DATE_EPOCH="${DG_BUILD_EPOCH:-1767225600}"
export RUSTFLAGS="-C target-feature=+crt-static --remap-path-prefix=${CARGO_TARGET_DIR}=/build/target --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo"
# Debug info is stripped; the symbol table stays (about 9 MB of the file, never loaded: no
# resident memory). The release link orders the code by symbol name, and the names carry a
# hash of the build's settings, `strip` among them: the list (appliance/daemon/link/
# symbol-order.txt) is made from this very build, by running it (scripts/symbol-order.sh),
# which needs its names. A panic's backtrace names functions too.
export CARGO_PROFILE_RELEASE_STRIP=debuginfo
export CARGO_PROFILE_RELEASE_DEBUG=false
