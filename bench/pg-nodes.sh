#!/usr/bin/env bash
# One node against two nodes on one PostgreSQL (issue 18, item 5): the "assen" live
# phase is recorded once (`buurtsync-loadgen record`), then replayed at each offered
# rate in $RATES against one node and against two nodes sharing a fresh database
# (devices alternate between the nodes, so every change reaches half its holders
# through the other node), alternating which goes first. Prints committed changes per
# second, propagation p99 and server CPU per change for both, each configuration's
# knee (the highest offered rate with everything committed and delivered, p99 < 1 s,
# as `buurtsync-loadgen capacity` defines it), and the target: two nodes commit at
# least as many changes per second as one (knee of two ≥ knee of one).
#
#   bash bench/pg-nodes.sh
#   RATES="100 200 400" REPLAY_SECS=20 bash bench/pg-nodes.sh
#   BUURTSYNC=/old/buurtsync LOADGEN=/old/buurtsync-loadgen bash bench/pg-nodes.sh
#
# The PostgreSQL cluster is a throwaway one (scripts/ensure-postgres.sh: Debian's
# packages, loopback only, fsync off), so the figures show the servers' own
# serialisation, not the disk's. Reports (JSON) and server logs go to $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

RATES=${RATES:-"100 200 400 800"}
REPLAY_SECS=${REPLAY_SECS:-10}
RECORD_ARGS=${RECORD_ARGS:-"--professionals 48 --volunteers 48"}
SCALE=${SCALE:-0.05}
OUT=${OUT:-bench/results/pg-nodes-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

step() { printf '\n==> %s\n' "$*" >&2; }

if [[ -z "${BUURTSYNC:-}" || -z "${LOADGEN:-}" ]]; then
  step "build (release): buurtsync and buurtsync-loadgen"
  cargo build --release -p buurtsync-server -p buurtsync-loadgen --bins
fi
BUURTSYNC=${BUURTSYNC:-$PWD/target/release/buurtsync}
LOADGEN=${LOADGEN:-$PWD/target/release/buurtsync-loadgen}
ulimit -n 65536 2>/dev/null || true

pg_dir=$(mktemp -d)
PIDS=()
stop_servers() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  PIDS=()
}
trap 'stop_servers; bash scripts/ensure-postgres.sh stop "$pg_dir"' EXIT
step "PostgreSQL: a throwaway cluster"
admin=$(bash scripts/ensure-postgres.sh start "$pg_dir")
base=${admin%/*}

# Waits (bounded) for the address a server logs when it listens.
listening() {
  local log=$1
  for _ in $(seq 300); do
    if grep -q 'buurtsync listening' "$log" 2>/dev/null; then
      grep 'buurtsync listening' "$log" | grep -oE '127\.0\.0\.1:[0-9]+' | head -1
      return 0
    fi
    sleep 0.1
  done
  echo "no server listening; its log:" >&2
  cat "$log" >&2
  return 1
}

replay_at() {
  local nodes=$1 rate=$2 name dir urls=() pids=() log addr
  name="bs_bench_${nodes}_${rate}"
  psql "$admin" -q -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS $name" -c "CREATE DATABASE $name"
  dir=$(mktemp -d)
  "$LOADGEN" seed --buurtsync "$BUURTSYNC" --database "$base/$name" --out "$dir/tokens.json" >/dev/null
  for n in $(seq "$nodes"); do
    log="$OUT/replay-$nodes-$rate-node$n.log"
    BUURTSYNC_LOG="warn,buurtsync_server::serve=info" "$BUURTSYNC" --database "$base/$name" --log-json serve \
      --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --insecure-plain-http \
      --max-connections-per-user 100000 2>"$log" &
    PIDS+=($!)
    pids+=(--pid "$!")
    addr=$(listening "$log")
    urls+=(--url "ws://$addr/sync")
  done
  step "replay at $rate changes/s: $nodes node(s) (${urls[*]})"
  "$LOADGEN" replay "${urls[@]}" "${pids[@]}" --tokens "$dir/tokens.json" --label "pg-$nodes-node" \
    --recording "$OUT/recording.json" --rate "$rate" --secs "$REPLAY_SECS" \
    --out "$OUT/replay-$nodes-$rate.json" || echo "replay failed: $nodes node(s) at $rate" >&2
  stop_servers
  psql "$admin" -q -c "DROP DATABASE IF EXISTS $name" || true
  rm -rf "$dir"
}

max_rate=0
for rate in $RATES; do (( rate > max_rate )) && max_rate=$rate; done
step "record the live phase once: $((max_rate * ${REPLAY_SECS%.*})) changes"
# shellcheck disable=SC2086
"$LOADGEN" record --scale "$SCALE" $RECORD_ARGS --changes "$((max_rate * ${REPLAY_SECS%.*}))" \
  --out "$OUT/recording.json"
i=0
for rate in $RATES; do
  if (( i % 2 == 0 )); then replay_at 1 "$rate"; replay_at 2 "$rate"; else replay_at 2 "$rate"; replay_at 1 "$rate"; fi
  i=$((i + 1))
done

step "one node and two nodes on one PostgreSQL — reports in $OUT"
python3 - "$OUT" $RATES <<'PY' | tee "$OUT/pg-nodes.txt"
import json, os, sys
out, rates = sys.argv[1], sys.argv[2:]
def load(nodes, rate):
    path = os.path.join(out, f"replay-{nodes}-{rate}.json")
    return json.load(open(path)) if os.path.exists(path) else None
def clean(r):
    # The knee's rule: every change committed and delivered, p99 under a second.
    # (ReplayReport::complete and capacity::knee in the loadgen.)
    return r and r["errors"] == 0 and r["undelivered"] == 0 and r["heads_mismatched"] == 0 \
        and r["changes_committed"] == r["changes_scheduled"] and r["propagation_ms"]["p99"] < 1000
print(f"{'offered /s':>10} | {'1 node: committed /s':>20} {'p99 ms':>8} {'CPU µs/change':>14} | {'2 nodes: committed /s':>21} {'p99 ms':>8} {'CPU µs/change':>14}")
best = {1: 0.0, 2: 0.0}
knee = {1: 0, 2: 0}
for rate in rates:
    row = f"{rate:>10} |"
    for nodes in (1, 2):
        r = load(nodes, rate)
        if r is None:
            row += f" {'failed':>20} {'':>8} {'':>14} |"
            continue
        mark = "" if clean(r) else " !"
        row += f" {r['committed_per_s']:>18.1f}{mark:2} {r['propagation_ms']['p99']:>8.0f} {r['server_cpu_us_per_change']:>14.0f} |"
        if clean(r):
            best[nodes] = max(best[nodes], r["committed_per_s"])
            knee[nodes] = max(knee[nodes], int(rate))
    print(row.rstrip(" |"))
print("(! = not every change committed and delivered with p99 < 1 s)")
print(f"knee (highest offered rate kept clean): one node {knee[1]} /s ({best[1]:.1f} committed /s), "
      f"two nodes {knee[2]} /s ({best[2]:.1f} committed /s)")
verdict = "met" if knee[2] >= knee[1] > 0 else "NOT met"
print(f"target: two nodes commit at least as many changes per second as one: {verdict}")
PY
