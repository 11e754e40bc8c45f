#!/usr/bin/env bash
# Runs the test binaries of every workspace package but the daemon's (the libraries: storage,
# engine, providers, identity, crypto, the PKCS#11 helper, the allocator), as `cargo test`
# would: each from its package's directory, with its "Running" line and libtest's own
# output. Reads the artifacts a debug build listed
# (`cargo test --workspace --all-targets --no-run --message-format=json-render-diagnostics`),
# so nothing is compiled again: `cargo test --exclude dg-appliance` would resolve the
# dependencies' features without the daemon and compile a second set of them.
# Runs every binary; exits 1 when any failed.
# Usage: scripts/library-tests.sh ARTIFACTS.json
set -euo pipefail
artifacts="$1"
daemon_manifest="$(cd "$(dirname "$0")/.." && pwd)/appliance/daemon/Cargo.toml"
failed=0
ran=0
while IFS=$'\t' read -r dir source executable; do
    ran=$((ran + 1))
    echo "     Running $source ($executable)"
    (cd "$dir" && "$executable") || { failed=1; echo "error: test failed: $executable"; }
done < <(python3 - "$artifacts" "$daemon_manifest" <<'EOF'
import json, os, sys
artifacts, daemon = sys.argv[1], sys.argv[2]
for line in open(artifacts, encoding="utf-8"):
    try:
        message = json.loads(line)
    except ValueError:
        continue
    if message.get("reason") != "compiler-artifact" or not message.get("profile", {}).get("test"):
        continue
    executable = message.get("executable")
    if not executable or message.get("manifest_path") == daemon:
        continue
    manifest_dir = os.path.dirname(message["manifest_path"])
    source = os.path.relpath(message["target"]["src_path"], manifest_dir)
    print(f"{manifest_dir}\t{source}\t{executable}")
EOF
)
[ "$ran" -gt 0 ] || { echo "no test binary listed in $artifacts"; exit 1; }
exit "$failed"
