#!/usr/bin/env bash
# Installs a test peer's npm packages in DIR exactly as DIR/package-lock.json pins them (npm
# ci, no install scripts), unless the installed tree already matches the lock file; then
# prints PACKAGE's installed version. Node.js and npm come from the machine (.ci/run installs
# Debian's nodejs and npm when they are missing).
#   scripts/npm-ci-locked.sh DIR PACKAGE
set -euo pipefail
dir="$1"
package="$2"
cd "$dir"
stamp=node_modules/.dg-lock-sha256
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
npm ci --no-audit --no-fund --ignore-scripts
echo "$want" >"$stamp"
echo "$package $(node -p "require('./node_modules/$package/package.json').version") installed (node $(node --version))"
