#!/usr/bin/env bash
# Packaging checks (issue 9): the release binary is static and reproducible, the unit
# files verify and score <= 1.5, the .rpm holds what it should, and a booted install test:
# a Debian bookworm root (debootstrap, cached), the .deb installed with dpkg, systemd booted
# with systemd-nspawn, the real unit serving /readyz and tools/list, a restart, the backup
# service leaving a verified backup, then dpkg -r keeping data and dpkg --purge removing it.
set -euo pipefail
cd "$(dirname "$0")/.."
target="$(source scripts/release-env.sh && echo "$DG_RELEASE_TARGET")"
# One package time for every packaging below (by default the last commit's time, read once:
# a commit made while the test runs must not change it half-way).
DG_PACKAGE_EPOCH="$(source scripts/release-env.sh && echo "$DG_PACKAGE_EPOCH")"
export DG_PACKAGE_EPOCH
bin="target/$target/release/dg-appliance"

echo "== [${SECONDS}s into packaging] release build"
bash scripts/release.sh >/dev/null
file "$bin"
sha() { sha256sum "$@" | awk '{print $1}'; }
first_bin=$(sha "$bin"); first_deb=$(sha dist/*.deb); first_rpm=$(sha dist/*.rpm)
# The release link places the functions the daemon runs first (appliance/daemon/build.rs);
# a build that could not (no lld, no list) links in the default order, with more code resident.
# (Read whole, then matched: `version | grep -q` under pipefail fails at random when grep
# ends before the binary's last write.)
version="$("$bin" version)"
grep -q "^code layout: executed functions first" <<<"$version" \
    || { echo "$version"; echo "the shipped binary was linked in the default order (appliance/daemon/build.rs)"; exit 1; }
# The list's names carry hashes of the toolchain, the dependencies and the build settings:
# after an update of one of them the linker finds few of the names and, without a word,
# keeps the default order (the load bench's memory line then shows it). Code changes move a
# few names (LLVM's `.llvm.<hash>` suffixes); under 90% found, the list is stale.
order_list=appliance/daemon/link/symbol-order.txt
listed=$(LC_ALL=C sort -u "$order_list" | wc -l)
found=$(nm --defined-only "$bin" | awk '{print $3}' | LC_ALL=C sort -u | LC_ALL=C comm -12 - <(LC_ALL=C sort -u "$order_list") | wc -l)
echo "code layout: $found of the $listed listed functions are in the shipped binary"
[ $((found * 10)) -ge $((listed * 9)) ] \
    || { echo "the symbol-order list is stale (made for another toolchain, dependency set or build settings): rerun scripts/symbol-order.sh"; exit 1; }

echo "== [${SECONDS}s into packaging] the shipped binary parses numbers as the open-source server does"
# 604.02102123842989 is nearest to the double printed 604.0210212384299; serde_json without
# float_roundtrip parses it one ulp off (604.02102123843), which changes canonical JSON and
# every hash over it. The test builds cannot show this: a dev-dependency (serde_jcs) turns
# the feature on there, so the shipped binary, built without dev-dependencies, is checked.
float_dir="$(mktemp -d)"
frame() { printf 'Content-Length: %d\r\n\r\n%s' "${#1}" "$1"; }
register='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"schemas_register","arguments":{"record":{"created_at":{"kind":"unix_millis","value":1710000000000},"description":null,"namespace_id":1,"schema":{"type":"number","maximum":604.02102123842989},"schema_id":"float-check","tenant_id":1,"version":"v1"}}}}'
fetch='{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"schemas_get","arguments":{"namespace_id":1,"schema_id":"float-check","tenant_id":1,"version":"v1"}}}'
stored=$( (frame "$register"; frame "$fetch") | timeout 20 "$bin" stdio --data-dir "$float_dir/data" 2>/dev/null \
    | grep -o '"maximum":[-0-9.eE+]*' | tail -n 1 || true)
rm -rf "$float_dir"
echo "stored as ${stored:-nothing}"
[ "$stored" = '"maximum":604.0210212384299' ] || { echo "the shipped binary stored 604.02102123842989 as ${stored:-nothing}, not 604.0210212384299"; exit 1; }

echo "== [${SECONDS}s into packaging] reproducibility: the appliance crates rebuilt (in the background, beside the checks below), the packages and generated files made again"
# The rebuild (scripts/reproducible-rebuild.sh) is the longest step (about 200 s on two
# cores, mostly one crate's codegen on one core), so it runs beside the checks below. They
# use a copy of the first build's binary, in a target directory of their own (cargo-deb and
# cargo-generate-rpm read the binary from there), while the kept target directory rebuilds
# it. The full suite (scripts/test-all.sh) rebuilds earlier, beside its tests, and passes
# the binary's hash in DG_REPRODUCED_SHA256: then only this binary is checked against it.
work="$(mktemp -d)"
copy_target="$work/target"
mkdir -p "$copy_target/$target/release"
cp "$bin" "$copy_target/$target/release/dg-appliance"
bin="$copy_target/$target/release/dg-appliance"
rebuild_pid=""
if [ -z "${DG_REPRODUCED_SHA256:-}" ]; then
    set -m
    bash scripts/reproducible-rebuild.sh "$bin" >"$work/rebuild.log" 2>&1 &
    rebuild_pid=$!
    set +m
fi
# An early exit stops the rebuild (its own process group) and removes the copy.
trap '[ -z "$rebuild_pid" ] || kill -- -"$rebuild_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/packages"
SOURCE_DATE_EPOCH="$DG_PACKAGE_EPOCH" CARGO_TARGET_DIR="$copy_target" \
    cargo deb -p dg-appliance --no-build --no-strip --target "$target" --output "$work/packages/" >/dev/null
cargo generate-rpm -p appliance/daemon --target "$target" --target-dir "$copy_target" \
    --output "$work/packages/" --source-date "$DG_PACKAGE_EPOCH"
[ "$first_deb" = "$(sha "$work"/packages/*.deb)" ] || { echo ".deb differs between two packagings"; exit 1; }
[ "$first_rpm" = "$(sha "$work"/packages/*.rpm)" ] || { echo ".rpm differs between two packagings"; exit 1; }
"$bin" generate-docs --out "$work/generated"
"$bin" config default >"$work/generated/config.toml"
gzip -9 -n -f "$work"/generated/man/*.1
diff -r --exclude=dg-appliance-pkcs11 "$work/generated" dist/generated \
    || { echo "the generated files differ between two runs"; exit 1; }
echo "reproducible: .deb $first_deb, .rpm $first_rpm, the generated files (the binary: below, once rebuilt)"

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
for doc in README.md backup-and-restore.md identity-and-audit.md install-offline.md metrics.md slo.md runbooks.md; do
    grep -qx "/usr/share/doc/dg-appliance/$doc" /tmp/dg-rpm-files || { echo "rpm lacks the operator document $doc"; exit 1; }
    grep -qx "/usr/share/doc/dg-appliance/$doc" /tmp/dg-deb-files || { echo "deb lacks the operator document $doc"; exit 1; }
done
grep -qx "/usr/share/dg-appliance/prometheus/dg-appliance.rules.yml" /tmp/dg-rpm-files || { echo "rpm lacks the Prometheus rules"; exit 1; }
grep -qx "/usr/share/dg-appliance/prometheus/dg-appliance.rules.yml" /tmp/dg-deb-files || { echo "deb lacks the Prometheus rules"; exit 1; }
# The PKCS#11 helper ships in both, dynamically linked (it loads the HSM vendor's module).
grep -qx "/usr/libexec/dg-appliance/dg-appliance-pkcs11" /tmp/dg-rpm-files || { echo "rpm lacks the PKCS#11 helper"; exit 1; }
grep -qx "/usr/libexec/dg-appliance/dg-appliance-pkcs11" /tmp/dg-deb-files || { echo "deb lacks the PKCS#11 helper"; exit 1; }
file dist/generated/dg-appliance-pkcs11 | grep -q "dynamically linked" || { echo "the PKCS#11 helper is not dynamically linked"; exit 1; }
# The default package changes no device: no udev rule in either package.
! grep -q udev /tmp/dg-rpm-files /tmp/dg-deb-files || { echo "a package ships a udev rule"; exit 1; }
rpm -qp --scripts dist/*.rpm > /tmp/dg-rpm-scripts
grep -q "systemd-sysusers" /tmp/dg-rpm-scripts || { echo "rpm scripts missing"; exit 1; }

echo "== [${SECONDS}s into packaging] the FIPS packages (scripts/release-fips.sh): same files, the FIPS binary, conflicting names"
bash scripts/release-fips.sh >/dev/null
fips_deb=$(ls dist/fips/*.deb) && fips_rpm=$(ls dist/fips/*.rpm)
[ "$(dpkg-deb -f "$fips_deb" Package)" = dg-appliance-fips ] || { echo "$fips_deb: wrong package name"; exit 1; }
dpkg-deb -f "$fips_deb" Conflicts | grep -qw dg-appliance || { echo "$fips_deb does not conflict with dg-appliance"; exit 1; }
rpm -qp --conflicts "$fips_rpm" | grep -qw dg-appliance || { echo "$fips_rpm does not conflict with dg-appliance"; exit 1; }
rpm -qp --qf '%{NAME}\n' "$fips_rpm" | grep -qx dg-appliance-fips || { echo "$fips_rpm: wrong package name"; exit 1; }
# (cargo-deb puts each package's copyright under its own name: /usr/share/doc/<package>/.)
deb_files() { dpkg-deb -c "$1" | awk '{print $NF}' | grep -Ev '^\./usr/share/doc/dg-appliance(-fips)?/(copyright)?$'; }
diff <(deb_files "$fips_deb") <(deb_files dist/*.deb) \
    || { echo "the FIPS .deb holds other files than the standard one"; exit 1; }
fips_unpacked=$(mktemp -d)
dpkg-deb -x "$fips_deb" "$fips_unpacked"
version="$("$fips_unpacked/usr/bin/dg-appliance" version)"
grep -qx "FIPS mode: yes" <<<"$version" || { echo "the FIPS .deb's binary is not the FIPS build"; exit 1; }
dpkg-deb -c "$fips_deb" > /tmp/dg-fips-deb-files
grep -q "/usr/share/doc/dg-appliance/fips.md" /tmp/dg-fips-deb-files || { echo "the FIPS .deb lacks fips.md"; exit 1; }
fips_bin_sha=$(sha256sum "target/fips/$target/release/dg-appliance" | awk '{print $1}')
# Listed to a file first: `grep -q` ends at the first match, and under pipefail the rpm
# still writing the rest of its long listing then fails the pipeline (SIGPIPE) at random.
rpm -qp --qf '[%{FILENAMES} %{FILEDIGESTS}\n]' "$fips_rpm" > /tmp/dg-fips-rpm-digests
grep -qx "/usr/bin/dg-appliance $fips_bin_sha" /tmp/dg-fips-rpm-digests \
    || { echo "the FIPS .rpm's binary is not the FIPS build"; exit 1; }
rm -rf "$fips_unpacked"
echo "FIPS packages: $(basename "$fips_deb"), $(basename "$fips_rpm")"

echo "== [${SECONDS}s into packaging] booted install test (with an upgrade to a newer package revision)"
rm -rf target/upgrade-test && mkdir -p target/upgrade-test
CARGO_TARGET_DIR="$copy_target" \
    cargo deb -p dg-appliance --no-build --no-strip --target "$target" --deb-revision 2 --output target/upgrade-test/ >/dev/null
DG_HOST_BIN="$bin" bash scripts/nspawn-install-test.sh dist/*.deb target/upgrade-test/*.deb

if [ -n "$rebuild_pid" ]; then
    echo "== [${SECONDS}s into packaging] reproducibility: waiting for the rebuild of the appliance crates"
    wait "$rebuild_pid" || { cat "$work/rebuild.log"; echo "the rebuild failed, or its binary differs"; exit 1; }
    tail -n 1 "$work/rebuild.log"
else
    [ "$first_bin" = "$DG_REPRODUCED_SHA256" ] \
        || { echo "the packaged binary ($first_bin) is not the one the suite built twice ($DG_REPRODUCED_SHA256)"; exit 1; }
    echo "reproducible: binary $first_bin (built twice by the suite)"
fi
