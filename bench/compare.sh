#!/usr/bin/env bash
# Runs the same "assen" workload against buurtsync and against the automerge-repo
# reference sync server (bench/reference), alternating which goes first, for several
# rounds, then prints the ratios against the performance targets (docs/performance.md).
#
#   bash bench/compare.sh                       # defaults below
#   ROUNDS=5 SCALE=0.1 bash bench/compare.sh     # bigger
#   LOADGEN_ARGS="--live-secs 20" bash bench/compare.sh
#   BUURTSYNC=/old/buurtsync LOADGEN=/old/buurtsync-loadgen bash bench/compare.sh
#
# Every server gets a fresh store in a temporary directory; reports (JSON) and server
# logs go to $OUT. Release builds. Needs Node >= 20 and the npm registry (npm ci).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
SCALE=${SCALE:-0.05}
# Our server's document cache budget (its --cache-budget-mib; 512 is the default); the
# memory target is RSS ≤ this + 100 MiB.
CACHE_BUDGET_MIB=${CACHE_BUDGET_MIB:-512}
LOADGEN_ARGS=${LOADGEN_ARGS:-}
OUT=${OUT:-bench/results/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

step() { printf '\n==> %s\n' "$*" >&2; }

# BUURTSYNC / LOADGEN: run given binaries instead of building (e.g. an older build,
# for a before/after comparison).
if [[ -z "${BUURTSYNC:-}" || -z "${LOADGEN:-}" ]]; then
  step "build (release): buurtsync and buurtsync-loadgen"
  cargo build --release -p buurtsync-server -p buurtsync-loadgen --bins
fi
BUURTSYNC=${BUURTSYNC:-$PWD/target/release/buurtsync}
LOADGEN=${LOADGEN:-$PWD/target/release/buurtsync-loadgen}

step "reference server: npm ci (automerge-repo 2.5)"
npm ci --prefix bench/reference --no-audit --no-fund --loglevel=error

# Many devices, each a socket: allow enough descriptors for both sides.
ulimit -n 65536 2>/dev/null || true

SERVER_PID=
stop_server() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=
}
trap stop_server EXIT

# Waits (bounded) for a pattern in a log file and prints the first match.
wait_for() {
  local file=$1 pattern=$2
  for _ in $(seq 300); do
    if grep -qE "$pattern" "$file" 2>/dev/null; then
      grep -oE "$pattern" "$file" | head -1
      return 0
    fi
    sleep 0.1
  done
  echo "timed out waiting for $pattern in $file" >&2
  cat "$file" >&2
  return 1
}

run_ours() {
  local round=$1 dir
  dir=$(mktemp -d)
  local db="sqlite://$dir/buurtsync.sqlite3"
  "$LOADGEN" seed --buurtsync "$BUURTSYNC" --database "$db" --out "$dir/tokens.json" >/dev/null
  BUURTSYNC_LOG="warn,buurtsync_server::serve=info" "$BUURTSYNC" --database "$db" --log-json serve --listen 127.0.0.1:0 \
    --insecure-plain-http --max-connections-per-user 100000 --cache-budget-mib "$CACHE_BUDGET_MIB" \
    2>"$OUT/buurtsync-$round.log" &
  SERVER_PID=$!
  # The listening line is logged at info; ask for it explicitly.
  local addr
  addr=$(wait_for "$OUT/buurtsync-$round.log" '127\.0\.0\.1:[0-9]+')
  step "round $round: buurtsync on $addr (pid $SERVER_PID)"
  # shellcheck disable=SC2086
  "$LOADGEN" run --url "ws://$addr/sync" --tokens "$dir/tokens.json" --label buurtsync \
    --scale "$SCALE" --pid "$SERVER_PID" --out "$OUT/buurtsync-$round.json" $LOADGEN_ARGS
  stop_server
  rm -rf "$dir"
}

run_reference() {
  local round=$1 dir
  dir=$(mktemp -d)
  node bench/reference/server.mjs "$dir/store" 0 >"$OUT/reference-$round.log" 2>&1 &
  SERVER_PID=$!
  local port
  port=$(wait_for "$OUT/reference-$round.log" 'listening [0-9]+' | awk '{print $2}')
  step "round $round: reference on 127.0.0.1:$port (pid $SERVER_PID)"
  # shellcheck disable=SC2086
  "$LOADGEN" run --url "ws://127.0.0.1:$port/sync" --label reference \
    --scale "$SCALE" --pid "$SERVER_PID" --out "$OUT/reference-$round.json" $LOADGEN_ARGS
  stop_server
  rm -rf "$dir"
}

for round in $(seq "$ROUNDS"); do
  if (( round % 2 == 1 )); then
    run_ours "$round"; run_reference "$round"
  else
    run_reference "$round"; run_ours "$round"
  fi
done

step "comparison ($ROUNDS rounds, scale $SCALE) — reports in $OUT"
ours=() ; refs=()
for round in $(seq "$ROUNDS"); do
  ours+=("$OUT/buurtsync-$round.json"); refs+=("$OUT/reference-$round.json")
done
"$LOADGEN" compare --ours "${ours[@]}" --reference "${refs[@]}" \
  --cache-budget-mib "$CACHE_BUDGET_MIB" | tee "$OUT/comparison.txt"
