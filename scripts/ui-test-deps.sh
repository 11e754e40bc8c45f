#!/usr/bin/env bash
# Installs what the admin UI's browser tests inject into each page: axe-core (pinned by
# tests/ui/package-lock.json) from the npm registry, unless the installed tree already
# matches the lock file. The browser itself is Debian's chromium and chromium-driver,
# installed by .ci/run (never a downloaded browser build).
set -euo pipefail
cd "$(dirname "$0")/../tests/ui"
stamp=node_modules/.dg-lock-sha256
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
npm ci --no-audit --no-fund --ignore-scripts
echo "$want" >"$stamp"
echo "axe-core $(node -p "require('./node_modules/axe-core/package.json').version") installed"
