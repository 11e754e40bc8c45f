#!/usr/bin/env bash
# Packaging checks (issue 9): the release binary is static and reproducible, the unit
# files verify and score <= 1.5, the .rpm holds what it should, and a booted install test:
# a Debian bookworm root (debootstrap, cached), the .deb installed with dpkg, systemd booted
# with systemd-nspawn, the real unit serving /readyz and tools/list, a restart, the backup
# service leaving a verified backup, then dpkg -r keeping data and dpkg --purge removing it.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
bin="target/$target/release/dg-appliance"

echo "== [${SECONDS}s into packaging] release build"
bash scripts/release.sh >/dev/null
file "$bin"
sha() { sha256sum "$@" | awk '{print $1}'; }
first_bin=$(sha "$bin"); first_deb=$(sha dist/*.deb); first_rpm=$(sha dist/*.rpm)

echo "== [${SECONDS}s into packaging] reproducibility: rebuild the appliance crates and compare"
RUSTFLAGS="-C target-feature=+crt-static --remap-path-prefix=$PWD=/build/dg-appliance --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo" \
    cargo clean --release -p dg-appliance --target "$target"
bash scripts/release.sh >/dev/null
[ "$first_bin" = "$(sha "$bin")" ] || { echo "binary differs between two builds"; exit 1; }
[ "$first_deb" = "$(sha dist/*.deb)" ] || { echo ".deb differs between two builds"; exit 1; }
[ "$first_rpm" = "$(sha dist/*.rpm)" ] || { echo ".rpm differs between two builds"; exit 1; }
echo "reproducible: binary $first_bin"

echo "== [${SECONDS}s into packaging] offline bundle signature"
(cd dist && sha256sum -c SHA256SUMS)
"$bin" release verify --pubkey dist/release-keyring.json dist/SHA256SUMS
cp dist/SHA256SUMS /tmp/dg-sums-tampered && echo "x" >> /tmp/dg-sums-tampered && cp dist/SHA256SUMS.sig /tmp/dg-sums-tampered.sig
if "$bin" release verify --pubkey dist/release-keyring.json /tmp/dg-sums-tampered >/dev/null; then
    echo "a tampered SHA256SUMS verified"; exit 1
fi

echo "== [${SECONDS}s into packaging] unit hardening"
for unit in dg-appliance.service dg-appliance-backup.service; do
    score=$(systemd-analyze security --offline=true "systemd/$unit" 2>/dev/null | awk '/Overall exposure level/ {print $(NF-2)}')
    echo "$unit: exposure $score"
    awk -v s="$score" 'BEGIN { exit !(s != "" && s <= 1.5) }' || { echo "$unit scores above 1.5"; exit 1; }
done

echo "== [${SECONDS}s into packaging] rpm contents"
rpm -qlp dist/*.rpm | tee /tmp/dg-rpm-files
for path in /usr/bin/dg-appliance /usr/lib/systemd/system/dg-appliance.service /usr/lib/sysusers.d/dg-appliance.conf \
            /usr/lib/tmpfiles.d/dg-appliance.conf /etc/dg-appliance/config.toml; do
    grep -qx "$path" /tmp/dg-rpm-files || { echo "rpm lacks $path"; exit 1; }
done
# The operator documents the README points at ship in both packages.
dpkg-deb -c dist/*.deb | awk '{print $NF}' | sed 's|^\./|/|' > /tmp/dg-deb-files
for doc in README.md backup-and-restore.md identity-and-audit.md install-offline.md metrics.md; do
    grep -qx "/usr/share/doc/dg-appliance/$doc" /tmp/dg-rpm-files || { echo "rpm lacks the operator document $doc"; exit 1; }
    grep -qx "/usr/share/doc/dg-appliance/$doc" /tmp/dg-deb-files || { echo "deb lacks the operator document $doc"; exit 1; }
done
rpm -qp --scripts dist/*.rpm > /tmp/dg-rpm-scripts
grep -q "systemd-sysusers" /tmp/dg-rpm-scripts || { echo "rpm scripts missing"; exit 1; }

echo "== [${SECONDS}s into packaging] booted install test (with an upgrade to a newer package revision)"
rm -rf target/upgrade-test && mkdir -p target/upgrade-test
cargo deb -p dg-appliance --no-build --no-strip --target "$target" --deb-revision 2 --output target/upgrade-test/ >/dev/null
bash scripts/nspawn-install-test.sh dist/*.deb target/upgrade-test/*.deb
