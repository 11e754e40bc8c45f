#!/usr/bin/env bash
# Installs the OIDC system tests' OpenID provider (npm oidc-provider, pinned by
# tests/oidc-provider/package-lock.json) from the npm registry (scripts/npm-ci-locked.sh).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
exec bash "$root/scripts/npm-ci-locked.sh" "$root/tests/oidc-provider" oidc-provider
