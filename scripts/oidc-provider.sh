#!/usr/bin/env bash
# Installs the OIDC system tests' OpenID provider (npm oidc-provider, pinned by
# tests/oidc-provider/package-lock.json) from the npm registry, unless the installed tree
# already matches the lock file. Node.js and npm come from the machine (.ci/run installs
# Debian's nodejs and npm when they are missing).
set -euo pipefail
cd "$(dirname "$0")/../tests/oidc-provider"
stamp=node_modules/.dg-lock-sha256
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
npm ci --no-audit --no-fund --ignore-scripts
echo "$want" >"$stamp"
echo "oidc-provider $(node -p "require('./node_modules/oidc-provider/package.json').version") installed (node $(node --version))"
