#!/usr/bin/env bash
# Makes appliance/daemon/link/symbol-order.txt: the functions the daemon runs, in the order
# the release link places them (appliance/daemon/build.rs; docs/performance.md "The binary's
# code, laid out"). Run it after a toolchain or dependency update (symbol names carry hashes
# of both) or when the request path changed much; commit the file it writes.
# How: the release build itself (scripts/release-env.sh: it keeps its symbol table, and the
# names must be this build's, as they carry a hash of its settings), run under valgrind's
# callgrind (Debian valgrind) by the load bench's profile mode (start-up, the warm-up, 2,000
# cycles at 32 clients, 1,500 at 8: the request path, group commits, audit sealing, the
# timers), the executed functions listed hottest first. About 8 minutes on a warm target.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "needs valgrind (Debian: valgrind)"; exit 1; }
# shellcheck source=scripts/release-env.sh
source scripts/release-env.sh
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cargo build --release --locked -p dg-appliance --target "$DG_RELEASE_TARGET"
cp "$CARGO_TARGET_DIR/$DG_RELEASE_TARGET/release/dg-appliance" "$work/dg-appliance"
# The bench starts the daemon through this wrapper: `serve` under callgrind, in the
# background, so the bench's kill (of the wrapper) leaves it to a SIGTERM here, on which
# the daemon stops cleanly and callgrind writes its profile.
cat >"$work/daemon" <<WRAPPER
#!/usr/bin/env bash
if [ "\$1" = serve ]; then
    valgrind --tool=callgrind --demangle=no --log-file="$work/valgrind.log" --callgrind-out-file="$work/callgrind.out" "$work/dg-appliance" "\$@" &
    echo \$! >"$work/valgrind.pid"
    wait
else
    exec "$work/dg-appliance" "\$@"
fi
WRAPPER
chmod +x "$work/daemon"
DG_APPLIANCE_BIN="$work/daemon" DG_LOAD_PROFILE=1500 DG_LOAD_CLIENTS=8 DG_LOAD_PREFILL=2000 \
    timeout 1800 cargo bench --locked -p dg-appliance --bench load --target "$DG_RELEASE_TARGET"
pid="$(cat "$work/valgrind.pid")"
kill -TERM "$pid" 2>/dev/null || true
for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
done
python3 scripts/symbol-order/executed-functions.py "$work/callgrind.out" >appliance/daemon/link/symbol-order.txt
echo "appliance/daemon/link/symbol-order.txt: $(wc -l <appliance/daemon/link/symbol-order.txt) functions"
