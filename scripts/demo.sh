#!/usr/bin/env bash
# Builds buurtsync and starts it on an embedded SQLite file with a seeded demo wijk,
# two users, fresh tokens and two sample documents, and the volunteer web app at
# /app/. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
LISTEN="${BUURTSYNC_LISTEN:-127.0.0.1:8080}"
# The volunteer web app, served at http://$LISTEN/app/ (needs Node and npm).
if command -v npm >/dev/null; then
  bash scripts/build-web-app.sh
else
  echo "npm not found: the volunteer web app at /app/ is not built" >&2
fi
exec cargo run --release --quiet -p buurtsync-server --bin buurtsync -- \
  --database "sqlite://demo-data/buurtsync.sqlite3" demo --listen "$LISTEN"
