#!/usr/bin/env bash
# The release: a statically linked dg-appliance (glibc, +crt-static), its man pages and
# completions, the .deb (cargo-deb) and .rpm (cargo-generate-rpm), and the offline install
# bundle: both packages, SHA256SUMS and its Ed25519 signature, and the public key ring.
# Reproducible: DG_PACKAGE_EPOCH (default: the last commit's time) fixes the packages'
# timestamps and a constant SOURCE_DATE_EPOCH the compilers' (scripts/release-env.sh),
# paths are remapped, and two builds give the same bytes (scripts/test-packaging.sh checks).
# Usage: scripts/release.sh            (output in dist/)
# Env:   DG_RELEASE_KEYS=DIR            release signing key directory (default dist/release-keys,
#                                       created with a new key when empty; keep a real one offline)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-tools.sh cargo-deb cargo-generate-rpm

# shellcheck source=scripts/release-env.sh
source scripts/release-env.sh
target="$DG_RELEASE_TARGET"

echo "== static release build (SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH)"
cargo build --release --locked -p dg-appliance --target "$target"
bin="target/$target/release/dg-appliance"
kind="$(file "$bin")"
[[ "$kind" == *"statically linked"* || "$kind" == *"static-pie linked"* ]] || { echo "$kind: not statically linked"; exit 1; }
libs="$(ldd "$bin" 2>&1 || true)"
[[ "$libs" != *"=>"* ]] || { echo "$libs"; echo "ldd found shared libraries"; exit 1; }

echo "== generated files"
rm -rf dist/generated
mkdir -p dist/generated
# The PKCS#11 helper (appliance/pkcs11-helper): dynamically linked on purpose (it loads the
# HSM vendor's shared library, which a static program cannot), so it is built without
# +crt-static, in its own target directory.
(RUSTFLAGS="${RUSTFLAGS/-C target-feature=+crt-static /}" \
    cargo build --release --locked -p dg-appliance-pkcs11 --target "$target" --target-dir "$CARGO_TARGET_DIR/helper")
cp "target/helper/$target/release/dg-appliance-pkcs11" dist/generated/dg-appliance-pkcs11
"$bin" generate-docs --out dist/generated
"$bin" config default > dist/generated/config.toml
for page in dist/generated/man/*.1; do
    gzip -9 -n -f "$page"
done
find dist/generated -exec touch -h -d "@$DG_PACKAGE_EPOCH" {} +

echo "== packages"
rm -f dist/*.deb dist/*.rpm
SOURCE_DATE_EPOCH="$DG_PACKAGE_EPOCH" cargo deb -p dg-appliance --no-build --no-strip --target "$target" --output dist/
cargo generate-rpm -p appliance/daemon --target "$target" --output dist/ --source-date "$DG_PACKAGE_EPOCH"

echo "== offline bundle"
keys="${DG_RELEASE_KEYS:-dist/release-keys}"
(cd dist && sha256sum -- *.deb *.rpm > SHA256SUMS)
"$bin" release sign --keys "$keys" dist/SHA256SUMS
cp "$keys/keyring.json" dist/release-keyring.json
cp docs/install-offline.md dist/
ls -l dist
