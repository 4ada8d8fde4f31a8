#!/usr/bin/env bash
# Compares buurtsync with the automerge-repo reference sync server (bench/reference) on
# the same machine, in two parts (docs/performance.md):
#
# 1. Capacity curves (issue 18): the "assen" live phase is recorded once
#    (`buurtsync-loadgen record`), then replayed at each offered rate in $RATES against
#    a fresh server of each kind (`replay`), alternating which goes first, and
#    `buurtsync-loadgen capacity` prints both curves, their knees, the ratio and the
#    capacity and CPU targets.
# 2. The full workload (`run`: create, initial sync, storm, live, catch-up probe) for
#    $ROUNDS rounds, for the catch-up, storm and memory targets; ROUNDS=0 skips it.
#
#   bash bench/compare.sh                                    # defaults below
#   RATES="50 100 200" REPLAY_SECS=20 bash bench/compare.sh  # other rates, longer
#   RATES="50 100 140 1000 1100 1200 1300 1400" REFERENCE_RATES="50 100 140" bash bench/compare.sh
#   ROUNDS=3 SCALE=0.1 LOADGEN_ARGS="--live-secs 20" bash bench/compare.sh
#   BUURTSYNC=/old/buurtsync LOADGEN=/old/buurtsync-loadgen bash bench/compare.sh
#
# Every server gets a fresh store in a temporary directory; reports (JSON) and server
# logs go to $OUT. Release builds. Needs Node >= 20 and the npm registry (npm ci).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-1}
SCALE=${SCALE:-0.05}
# Offered rates (changes/s) of the capacity curves, and the seconds each replay lasts.
# The defaults bracket both knees on a 2-core machine (docs/performance.md: ours ≥
# 1,300/s, the reference's 50-100/s in session 9).
RATES=${RATES:-"50 100 140 700 1000 1200 1400"}
# The rates the reference server is replayed at. Past its knee each replay waits out
# the drain, minutes that say nothing new.
REFERENCE_RATES=${REFERENCE_RATES:-"50 100 140"}
REPLAY_SECS=${REPLAY_SECS:-10}
# The recorded population: the 96-device live phase of the earlier comparisons.
RECORD_ARGS=${RECORD_ARGS:-"--professionals 48 --volunteers 48"}
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

# Starts our server on a freshly seeded store in $1; sets SERVER_PID and ADDR.
start_ours() {
  local dir=$1 log=$2
  local db="sqlite://$dir/buurtsync.sqlite3"
  "$LOADGEN" seed --buurtsync "$BUURTSYNC" --database "$db" --out "$dir/tokens.json" >/dev/null
  BUURTSYNC_LOG="warn,buurtsync_server::serve=info" "$BUURTSYNC" --database "$db" --log-json serve --listen 127.0.0.1:0 \
    --metrics-listen 127.0.0.1:0 --insecure-plain-http --max-connections-per-user 100000 \
    --cache-budget-mib "$CACHE_BUDGET_MIB" 2>"$log" &
  SERVER_PID=$!
  ADDR=$(wait_for "$log" 'buurtsync listening.*127\.0\.0\.1:[0-9]+' | grep -oE '127\.0\.0\.1:[0-9]+' | tail -1)
}

# Starts the reference server on an empty store in $1; sets SERVER_PID and ADDR.
start_reference() {
  local dir=$1 log=$2
  node bench/reference/server.mjs "$dir/store" 0 >"$log" 2>&1 &
  SERVER_PID=$!
  ADDR=127.0.0.1:$(wait_for "$log" 'listening [0-9]+' | awk '{print $2}')
}

replay_at() {
  local kind=$1 rate=$2 dir tokens=()
  dir=$(mktemp -d)
  "start_$kind" "$dir" "$OUT/replay-$kind-$rate.log"
  [[ $kind == ours ]] && tokens=(--tokens "$dir/tokens.json")
  step "replay at $rate changes/s: $kind on $ADDR (pid $SERVER_PID)"
  "$LOADGEN" replay --url "ws://$ADDR/sync" "${tokens[@]}" --label "$kind" \
    --recording "$OUT/recording.json" --rate "$rate" --secs "$REPLAY_SECS" \
    --pid "$SERVER_PID" --out "$OUT/replay-$kind-$rate.json" || echo "replay failed: $kind at $rate" >&2
  stop_server
  rm -rf "$dir"
}

max_rate=0
for rate in $RATES; do (( rate > max_rate )) && max_rate=$rate; done
changes=$(( max_rate * ${REPLAY_SECS%.*} ))
step "record the live phase once: $changes changes ($RECORD_ARGS, scale $SCALE)"
# shellcheck disable=SC2086
"$LOADGEN" record --scale "$SCALE" $RECORD_ARGS --changes "$changes" --out "$OUT/recording.json"
i=0
for rate in $RATES; do
  if [[ " $REFERENCE_RATES " != *" $rate "* ]]; then
    replay_at ours "$rate"
  elif (( i % 2 == 0 )); then
    replay_at ours "$rate"; replay_at reference "$rate"
  else
    replay_at reference "$rate"; replay_at ours "$rate"
  fi
  i=$((i + 1))
done
step "capacity curves (rates: $RATES; $REPLAY_SECS s each) — reports in $OUT"
ours=(); refs=()
for rate in $RATES; do
  [[ -f "$OUT/replay-ours-$rate.json" ]] && ours+=("$OUT/replay-ours-$rate.json")
  [[ -f "$OUT/replay-reference-$rate.json" ]] && refs+=("$OUT/replay-reference-$rate.json")
done
"$LOADGEN" capacity --ours "${ours[@]}" --reference "${refs[@]}" | tee "$OUT/capacity.txt"
(( ROUNDS > 0 )) || exit 0

run_ours() {
  local round=$1 dir
  dir=$(mktemp -d)
  start_ours "$dir" "$OUT/buurtsync-$round.log"
  step "round $round: buurtsync on $ADDR (pid $SERVER_PID)"
  # shellcheck disable=SC2086
  "$LOADGEN" run --url "ws://$ADDR/sync" --tokens "$dir/tokens.json" --label buurtsync \
    --scale "$SCALE" --pid "$SERVER_PID" --out "$OUT/buurtsync-$round.json" $LOADGEN_ARGS
  stop_server
  rm -rf "$dir"
}

run_reference() {
  local round=$1 dir
  dir=$(mktemp -d)
  start_reference "$dir" "$OUT/reference-$round.log"
  step "round $round: reference on $ADDR (pid $SERVER_PID)"
  # shellcheck disable=SC2086
  "$LOADGEN" run --url "ws://$ADDR/sync" --label reference \
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

step "full workload ($ROUNDS rounds, scale $SCALE) — reports in $OUT"
ours=() ; refs=()
for round in $(seq "$ROUNDS"); do
  ours+=("$OUT/buurtsync-$round.json"); refs+=("$OUT/reference-$round.json")
done
"$LOADGEN" compare --ours "${ours[@]}" --reference "${refs[@]}" \
  --cache-budget-mib "$CACHE_BUDGET_MIB" | tee "$OUT/comparison.txt"
step "capacity curves (from above)"
cat "$OUT/capacity.txt"
