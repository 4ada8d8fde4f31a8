#!/usr/bin/env bash
# Builds the volunteer web app (mobile-examples/web-volunteer) into its dist/, which
# `buurtsync serve` serves at /app/. Installs its npm packages (automerge-repo, Vite,
# playwright-core for its browser test) with `npm ci` only when package-lock.json
# changed since the last install, so a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/../mobile-examples/web-volunteer"
stamp=node_modules/.buurtsync-installed-lock
if ! cmp -s package-lock.json "$stamp" 2>/dev/null; then
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json "$stamp"
fi
npm run --silent build -- --logLevel warn
