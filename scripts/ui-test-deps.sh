#!/usr/bin/env bash
# Installs what the admin UI's browser tests inject into each page: axe-core (pinned by
# tests/ui/package-lock.json) from the npm registry (scripts/npm-ci-locked.sh). The browser
# itself is Debian's chromium and chromium-driver, installed by .ci/run (never a downloaded
# browser build).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
exec bash "$root/scripts/npm-ci-locked.sh" "$root/tests/ui" axe-core
