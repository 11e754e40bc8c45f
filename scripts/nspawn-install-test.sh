#!/usr/bin/env bash
# Booted install test of a .deb: Debian bookworm (scripts/debian-root.sh: debootstrap,
# cached as a tarball in $DG_ROOTFS_CACHE, default ~/.cache/dg-appliance), dpkg -i, systemd booted with
# systemd-nspawn, then the real unit is exercised from the host over loopback (the
# container shares the host's network). Stops by itself; cleans up on every exit.
# Usage: scripts/nspawn-install-test.sh path/to/dg-appliance.deb [path/to/newer.deb]
# With a second package, an upgrade is tested too: the installed version must leave a
# verified pre-upgrade backup and the data must survive.
set -euo pipefail
deb="$(realpath "$1")"
upgrade="${2:+$(realpath "$2")}"
work="$(mktemp -d /var/tmp/dg-nspawn.XXXXXX)"
root="$work/root"
# The host's copy of the binary, to verify what the unit exported: DG_HOST_BIN, else the
# release build's (the packaging test passes a copy, as it rebuilds the release meanwhile).
host_bin="${DG_HOST_BIN:-$(dirname "$0")/../target/$(source "$(dirname "$0")/release-env.sh" && echo "$DG_RELEASE_TARGET")/release/dg-appliance}"
host_bin="$(realpath "$host_bin")"
nspawn_pid=""
cleanup() {
    if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
        kill -TERM "$nspawn_pid" 2>/dev/null || true
        for _ in $(seq 1 30); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 1; done
        kill -KILL "$nspawn_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

tarball="$(bash "$(dirname "$0")/debian-root.sh")"
mkdir -p "$root"
tar -C "$root" -xf "$tarball"
echo "dg-test" > "$root/etc/hostname"
cp "$deb" "$root/var/tmp/dg-appliance.deb"

run_in() { systemd-nspawn -q --register=no --keep-unit -D "$root" "$@"; }
echo "-- dpkg -i (offline)"
run_in dpkg -i /var/tmp/dg-appliance.deb
echo "-- systemd-analyze verify of the installed units"
run_in systemd-analyze verify --man=no /lib/systemd/system/dg-appliance.service \
    /lib/systemd/system/dg-appliance-backup.service /lib/systemd/system/dg-appliance-backup.timer
stat -c '%a %U:%G %n' "$root/etc/dg-appliance/config.toml" "$root/var/lib/dg-appliance" | tee "$work/modes"
grep -q "^640 root:" "$work/modes" && grep -q "^700 " "$work/modes"

echo "-- boot"
systemd-nspawn -q --register=no --keep-unit -b -D "$root" --console=passive >"$work/boot.log" 2>&1 &
nspawn_pid=$!
leader=""
for _ in $(seq 1 60); do
    # The container's init (systemd), not a short-lived helper nspawn forks on the way:
    # a helper's PID is gone a moment later, and nsenter into it fails.
    leader="$(pgrep -P "$nspawn_pid" -x 'systemd|init' | head -n 1 || true)"
    [ -n "$leader" ] && break
    sleep 1
done
[ -n "$leader" ] || { cat "$work/boot.log"; echo "the container did not start"; exit 1; }
inside() { nsenter -t "$leader" -a "$@"; }
wait_active() {
    for _ in $(seq 1 90); do
        state="$(inside systemctl is-active dg-appliance.service 2>/dev/null || true)"
        [ "$state" = active ] && return 0
        sleep 1
    done
    inside systemctl status dg-appliance.service --no-pager || true
    inside journalctl -u dg-appliance.service --no-pager -n 50 || true
    kill -0 "$leader" 2>/dev/null || { echo "the container's init ($leader) is gone; its console:"; tail -n 50 "$work/boot.log"; }
    echo "dg-appliance.service did not become active"; return 1
}
wait_active
echo "dg-appliance.service is active under systemd (Type=notify)"

data="$root/var/lib/dg-appliance"
cacert="$data/tls/cert.pem"
key="$(cat "$data/admin.key")"
base="https://127.0.0.1:8443"
readyz() { curl -sS --fail --cacert "$cacert" "$base/readyz"; echo; }
rpc() { curl -sS --cacert "$cacert" -H "authorization: Bearer $key" -H 'content-type: application/json' -d "$1" "$base/rpc"; }
readyz
tools=$(rpc '{"jsonrpc":"2.0","id":1,"method":"tools/list"}' | grep -o '"name":"[a-z_]*"' | wc -l)
echo "tools/list: $tools tools"
[ "$tools" -eq 18 ]

echo "-- a runpack under the unit's system-call filter"
spec='{"scenario_id":"pkg","namespace_id":1,"spec_version":"1","default_tenant_id":1,"policies":[],"schemas":[],"conditions":[],"stages":[{"stage_id":"s","entry_packets":[],"gates":[],"advance_to":{"kind":"terminal"},"timeout":null,"on_timeout":"fail"}]}'
rpc "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":\"scenario_define\",\"arguments\":{\"spec\":$spec}}}" | grep spec_hash >/dev/null
rpc '{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"scenario_start","arguments":{"scenario_id":"pkg","run_config":{"tenant_id":1,"namespace_id":1,"run_id":"r1","scenario_id":"pkg","dispatch_targets":[],"policy_tags":[]},"started_at":{"kind":"logical","value":1},"issue_entry_packets":false}}}' | grep '"run_id":"r1"' >/dev/null
rpc '{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"runpack_export","arguments":{"scenario_id":"pkg","tenant_id":1,"namespace_id":1,"run_id":"r1","generated_at":{"kind":"logical","value":2},"include_verification":true}}}' | grep '"status":"pass"' >/dev/null
curl -sS --fail --cacert "$cacert" -H "authorization: Bearer $key" -o "$work/r1.tar.zst" "$base/runpacks/1/1/r1.tar.zst"
"$host_bin" runpack verify "$work/r1.tar.zst" --pubkey "$data/keys/keyring.json"

echo "-- the installed service changes no device (no udev rule, no device allowed)"
! ls "$root"/lib/udev/rules.d/*dg-appliance* >/dev/null 2>&1 || { echo "the package ships a udev rule"; exit 1; }
! grep -q '^DeviceAllow=' "$root/lib/systemd/system/dg-appliance.service" || { echo "the unit allows a device"; exit 1; }

echo "-- systemctl restart"
inside systemctl restart dg-appliance.service
wait_active
readyz

echo "-- the backup timer's service, once"
inside systemctl list-timers --all --no-pager | grep dg-appliance-backup.timer >/dev/null
inside systemctl start dg-appliance-backup.service
backup="$(ls -d "$root"/var/lib/dg-appliance-backups/dg-backup-* | head -n 1)"
"$host_bin" backup verify "$backup" --pubkey "$data/keys/keyring.json"

if [ -n "$upgrade" ]; then
    echo "-- upgrade: the installed version backs up first"
    cp "$upgrade" "$root/var/tmp/dg-appliance-upgrade.deb"
    inside dpkg -i /var/tmp/dg-appliance-upgrade.deb
    pre="$(ls -d "$root"/var/lib/dg-appliance-backups/pre-upgrade/dg-backup-* | head -n 1)"
    "$host_bin" backup verify "$pre" --pubkey "$data/keys/keyring.json"
    wait_active
    rpc '{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"scenario_status","arguments":{"scenario_id":"pkg","request":{"run_id":"r1","tenant_id":1,"namespace_id":1,"requested_at":{"kind":"logical","value":3},"correlation_id":null}}}}' | grep '"run_id":"r1"' >/dev/null
    echo "upgraded; the run survived"
fi

echo "-- dpkg -r keeps the data"
inside dpkg -r dg-appliance
[ ! -e "$root/usr/bin/dg-appliance" ] || { echo "binary still installed"; exit 1; }
[ -f "$data/state.db" ] || { echo "dpkg -r removed the data"; exit 1; }
[ -f "$root/etc/dg-appliance/config.toml" ] || { echo "dpkg -r removed the config"; exit 1; }
echo "-- dpkg --purge removes it"
inside dpkg --purge dg-appliance
[ ! -e "$data" ] || { echo "dpkg --purge kept $data"; exit 1; }
[ ! -e "$root/etc/dg-appliance" ] || { echo "dpkg --purge kept /etc/dg-appliance"; exit 1; }
! inside getent passwd dg-appliance >/dev/null || { echo "dpkg --purge kept the user"; exit 1; }
inside systemctl poweroff || true
for _ in $(seq 1 30); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 1; done
echo "booted install test: passed"
