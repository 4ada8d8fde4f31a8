#!/usr/bin/env bash
# The memory target on its own: runs the "assen" workload against buurtsync only, with
# a given document cache budget, and checks the server's peak RSS against
# budget + 100 MiB (issue 7). Pick a budget smaller than the working set to see the
# budget hold under eviction.
#
#   SCALE=0.2 CACHE_BUDGET_MIB=16 bash bench/memory.sh
#
# Release builds; the report (JSON) and the server log go to $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

SCALE=${SCALE:-0.1}
CACHE_BUDGET_MIB=${CACHE_BUDGET_MIB:-16}
OUT=${OUT:-$(mktemp -d)}
LOADGEN_ARGS=${LOADGEN_ARGS:-}

cargo build --release -p buurtsync-server -p buurtsync-loadgen --bins
BUURTSYNC=target/release/buurtsync
LOADGEN=target/release/buurtsync-loadgen
ulimit -n 65536 2>/dev/null || true

dir=$(mktemp -d)
db="sqlite://$dir/buurtsync.sqlite3"
"$LOADGEN" seed --buurtsync "$BUURTSYNC" --database "$db" --out "$dir/tokens.json" >/dev/null
BUURTSYNC_LOG="warn,buurtsync_server::serve=info" "$BUURTSYNC" --database "$db" --log-json serve \
  --listen 127.0.0.1:0 --insecure-plain-http --max-connections-per-user 100000 \
  --cache-budget-mib "$CACHE_BUDGET_MIB" --metrics-listen 127.0.0.1:0 2>"$OUT/buurtsync.log" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
addr=
for _ in $(seq 300); do
  addr=$(grep 'buurtsync listening' "$OUT/buurtsync.log" | grep -oE '127\.0\.0\.1:[0-9]+' | head -1 || true)
  [[ -n "$addr" ]] && break
  sleep 0.1
done
[[ -n "$addr" ]] || { cat "$OUT/buurtsync.log" >&2; exit 1; }
# shellcheck disable=SC2086
"$LOADGEN" run --url "ws://$addr/sync" --tokens "$dir/tokens.json" --label buurtsync \
  --scale "$SCALE" --pid "$pid" --out "$OUT/report.json" --check $LOADGEN_ARGS >"$OUT/run.txt"
metrics_addr=$(grep 'metrics listening' "$OUT/buurtsync.log" | grep -oE '127\.0\.0\.1:[0-9]+' | head -1 || true)
metrics=$(curl -s "http://$metrics_addr/metrics" || true)
python3 - "$OUT/report.json" "$CACHE_BUDGET_MIB" "$metrics" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
budget = float(sys.argv[2])
peak = max(p["server"]["peak_rss_mib"] for p in report["phases"])
def counter(name):
    for line in sys.argv[3].splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0
print(f"peak RSS {peak:.1f} MiB with a cache budget of {budget:.0f} MiB "
      f"(target ≤ {budget + 100:.0f} MiB): {'met' if peak <= budget + 100 else 'NOT met'}")
print(f"evictions {counter('buurtsync_cache_evictions_total'):.0f}, "
      f"reloads {counter('buurtsync_cache_reloads_total'):.0f}")
PY
echo "reports in $OUT"
