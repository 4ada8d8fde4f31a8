#!/usr/bin/env bash
# Idle connections on one node (issue 18): opens $CONNECTIONS authenticated websockets
# that join and then only answer pings, spread over loopback source addresses
# (127.0.0.2, 127.0.0.3, …: one address has about 28,000 ephemeral ports), and prints
# the server's RSS before and after and the KiB per connection (target ≤ 16).
#
#   bash bench/idle.sh                         # 50,000 connections
#   CONNECTIONS=10000 HOLD_SECS=5 bash bench/idle.sh
#   BUURTSYNC=/old/buurtsync LOADGEN=/old/buurtsync-loadgen bash bench/idle.sh
#
# Both processes need a descriptor per connection: the script raises `ulimit -n` (a
# hard limit below that needs root or a raised limit in /etc/security/limits.conf).
set -euo pipefail
cd "$(dirname "$0")/.."

CONNECTIONS=${CONNECTIONS:-50000}
HOLD_SECS=${HOLD_SECS:-20}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"

if [[ -z "${BUURTSYNC:-}" || -z "${LOADGEN:-}" ]]; then
  cargo build --release -p buurtsync-server -p buurtsync-loadgen --bins
fi
BUURTSYNC=${BUURTSYNC:-target/release/buurtsync}
LOADGEN=${LOADGEN:-target/release/buurtsync-loadgen}

want=$((CONNECTIONS + 1024))
if ! ulimit -n "$want" 2>/dev/null; then
  echo "cannot raise the descriptor limit to $want (hard limit $(ulimit -Hn)); run as root or raise it" >&2
  exit 1
fi

dir=$(mktemp -d)
db="sqlite://$dir/buurtsync.sqlite3"
"$LOADGEN" seed --buurtsync "$BUURTSYNC" --database "$db" --wijken 1 --out "$dir/tokens.json" >/dev/null
BUURTSYNC_LOG="warn,buurtsync_server::serve=info" "$BUURTSYNC" --database "$db" --log-json serve \
  --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --insecure-plain-http \
  --max-connections-per-user "$((CONNECTIONS + 10))" 2>"$OUT/buurtsync.log" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
addr=
for _ in $(seq 300); do
  addr=$(grep 'buurtsync listening' "$OUT/buurtsync.log" | grep -oE '127\.0\.0\.1:[0-9]+' | head -1 || true)
  [[ -n "$addr" ]] && break
  sleep 0.1
done
[[ -n "$addr" ]] || { cat "$OUT/buurtsync.log" >&2; exit 1; }
"$LOADGEN" idle --url "ws://$addr/sync" --tokens "$dir/tokens.json" --connections "$CONNECTIONS" \
  --pid "$pid" --hold-secs "$HOLD_SECS" | tee "$OUT/idle.json"
echo "server log and report in $OUT"
