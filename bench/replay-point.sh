#!/usr/bin/env bash
# One point of the capacity curve for our server only (issue 18): a fresh seeded SQLite
# server, one replay of a recording at RATE changes/s for SECS seconds, and the
# loadgen's one-line summary (committed/s, propagation p50/p99, server and load
# generator CPU per change, peak RSS, the automerge floor). For A/B runs of two builds,
# alternate them: the machine's load moves the figures by ±10 %.
#
#   bash bench/replay-point.sh BINDIR RATE [SECS] [RECORDING]
#
# BINDIR holds release builds of `buurtsync` and `buurtsync-loadgen`. Without a
# RECORDING one is made next to the binaries (compare.sh's workload: scale 0.05, 48
# professionals and 48 volunteers), with RATE × SECS changes.
set -euo pipefail

bin=${1:?usage: replay-point.sh BINDIR RATE [SECS] [RECORDING]}
rate=${2:?usage: replay-point.sh BINDIR RATE [SECS] [RECORDING]}
secs=${3:-10}
recording=${4:-}

dir=$(mktemp -d)
pid=
cleanup() {
  if [[ -n $pid ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT

if [[ -z $recording ]]; then
  recording="$bin/recording-$((rate * secs)).json"
  if [[ ! -f $recording ]]; then
    "$bin/buurtsync-loadgen" record --scale 0.05 --professionals 48 --volunteers 48 \
      --changes "$((rate * secs))" --out "$recording" >/dev/null
  fi
fi

db="sqlite://$dir/buurtsync.sqlite3"
"$bin/buurtsync-loadgen" seed --buurtsync "$bin/buurtsync" --database "$db" --out "$dir/tokens.json" >/dev/null
BUURTSYNC_LOG="warn,buurtsync_server::serve=info" "$bin/buurtsync" --database "$db" --log-json serve \
  --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --insecure-plain-http \
  --max-connections-per-user 100000 2>"$dir/server.log" &
pid=$!
for _ in $(seq 300); do
  grep -q 'buurtsync listening' "$dir/server.log" && break
  sleep 0.1
done
addr=$(grep 'buurtsync listening' "$dir/server.log" | grep -oE '127\.0\.0\.1:[0-9]+' | head -1)
"$bin/buurtsync-loadgen" replay --url "ws://$addr/sync" --tokens "$dir/tokens.json" --label ours \
  --recording "$recording" --rate "$rate" --secs "$secs" --pid "$pid" --out "$dir/replay.json" 2>&1 |
  grep "changes/s offered"
