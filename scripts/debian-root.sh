#!/usr/bin/env bash
# The Debian bookworm root the booted install test starts from (debootstrap, minbase plus
# systemd), made once and cached as a tarball in $DG_ROOTFS_CACHE (default
# ~/.cache/dg-appliance). Prints the tarball's path.
# Usage: scripts/debian-root.sh
set -euo pipefail
cache="${DG_ROOTFS_CACHE:-$HOME/.cache/dg-appliance}"
mkdir -p "$cache"
tarball="$cache/bookworm-systemd-rootfs.tar"
if [ ! -f "$tarball" ]; then
    work="$(mktemp -d /var/tmp/dg-debootstrap.XXXXXX)"
    trap 'rm -rf "$work"' EXIT
    echo "-- debootstrap bookworm (cached afterwards at $tarball)" >&2
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,util-linux,passwd,adduser \
        bookworm "$work/bootstrap" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
        || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
    tar -C "$work/bootstrap" -cf "$tarball.tmp.$$" . && mv "$tarball.tmp.$$" "$tarball"
fi
echo "$tarball"
