#!/usr/bin/env bash
# Builds buurtsync and starts it on an embedded SQLite file with a seeded demo wijk,
# two users, fresh tokens and two sample documents. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
LISTEN="${BUURTSYNC_LISTEN:-127.0.0.1:8080}"
exec cargo run --release --quiet -p buurtsync-server --bin buurtsync -- \
  --database "sqlite://demo-data/buurtsync.sqlite3" demo --listen "$LISTEN"
