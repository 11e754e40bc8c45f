#!/usr/bin/env bash
# The FIPS release (fips/README.md): the same static, reproducible dg-appliance built with
# `--no-default-features --features fips` (every crypto operation in the AWS-LC FIPS 3
# module through aws-lc-rs 1.17), and its packages dg-appliance-fips .deb and .rpm, which
# conflict with the standard ones and install the same unit. Needs Go and CMake for the
# module's build (Debian golang-go, cmake: .ci/run installs them).
# Its own target directory (target/fips): the features differ, and the standard release
# binary at target/<triple>/release must stay the standard one.
# The FIPS binary keeps its symbol table (debug info is still stripped): an auditor can
# locate the module's boundary (BORINGSSL_bcm_text_start/end), and the integrity-failure
# test (tests/system/fips.rs) changes a byte inside it.
# Usage: scripts/release-fips.sh            (binary, packages: dist/fips/)
#        scripts/release-fips.sh build      (the binary only; prints its path last)
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in go cmake; do
    command -v "$tool" >/dev/null || { echo "the FIPS module's build needs $tool (Debian: golang-go, cmake)" >&2; exit 1; }
done
# shellcheck source=scripts/release-env.sh
source scripts/release-env.sh
export CARGO_PROFILE_RELEASE_STRIP=debuginfo
target="$DG_RELEASE_TARGET"
# By its real path: the module is built with CMake, which refuses a build directory it
# created under another path, and target/ is often a link (.ci/run keeps it outside the
# clone, so every clone reaches it by another path).
mkdir -p target/fips
target_dir="$(realpath target/fips)"
# A FIPS target directory whose CMake caches were made through another path (before the
# real path was used, or a moved directory) starts over rather than fail in the module's build.
stale=""
while IFS= read -r cache; do
    grep -qxF "CMAKE_CACHEFILE_DIR:INTERNAL=$(dirname "$cache")" "$cache" || stale="$cache"
done < <(find "$target_dir" -path '*/out/build/CMakeCache.txt' 2>/dev/null)
if [ -n "$stale" ]; then
    echo "$stale was made under another path: starting $target_dir over"
    rm -rf "$target_dir" && mkdir -p "$target_dir"
fi

echo "== static FIPS release build (SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH)"
cargo build --release --locked -p dg-appliance --no-default-features --features fips \
    --target "$target" --target-dir "$target_dir"
bin="$target_dir/$target/release/dg-appliance"
kind="$(file "$bin")"
[[ "$kind" == *"statically linked"* || "$kind" == *"static-pie linked"* ]] || { echo "$kind: not statically linked" >&2; exit 1; }
libs="$(ldd "$bin" 2>&1 || true)"
[[ "$libs" != *"=>"* ]] || { echo "$libs" >&2; echo "ldd found shared libraries" >&2; exit 1; }
# Read whole, then matched: `version | grep -q` under pipefail failed whenever grep ended
# before the binary wrote its last line (SIGPIPE). Failures go to stderr: callers drop stdout.
version="$("$bin" version)"
echo "$version"
grep -qx "FIPS mode: yes" <<<"$version" || { echo "the FIPS binary does not report FIPS mode" >&2; exit 1; }
if [ "${1:-}" = build ]; then
    echo "$bin"
    exit 0
fi
# The packaging tools, only for the packages (`build` alone runs beside the tool install).
bash scripts/install-tools.sh cargo-deb cargo-generate-rpm

echo "== FIPS packages"
# The generated files (man pages, completions, default config) are the standard release's:
# the command line and defaults are the same in both builds.
[ -d dist/generated ] || bash scripts/release.sh >/dev/null
rm -rf dist/fips
mkdir -p dist/fips
SOURCE_DATE_EPOCH="$DG_PACKAGE_EPOCH" CARGO_TARGET_DIR="$target_dir" cargo deb -p dg-appliance --variant fips --no-build --no-strip --target "$target" --output dist/fips/
cargo generate-rpm -p appliance/daemon --variant fips --target "$target" --target-dir "$target_dir" \
    --output dist/fips/ --source-date "$DG_PACKAGE_EPOCH"
(cd dist/fips && sha256sum -- *.deb *.rpm > SHA256SUMS)
ls -l dist/fips
