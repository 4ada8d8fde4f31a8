#!/usr/bin/env bash
# A SIGKILL campaign outside CI: tests/tests/crash.rs with many rounds.
#
#   scripts/crash-campaign.sh N             # N rounds on SQLite, then N on PostgreSQL
#   PG_ROUNDS=50 scripts/crash-campaign.sh 100
#   BUURTSYNC_CRASH_SEED=123 scripts/crash-campaign.sh 20   # replay a seed
#
# SQLite: one node, killed at a random moment under load each round and restarted on
# the same file. PostgreSQL: two nodes on one throwaway cluster (scripts/ensure-postgres.sh),
# one random node killed per round while the other serves on. After the rounds every
# change ever acknowledged must be in the store. Prints the `crash campaign:` lines
# (backend, nodes, rounds, seed, acknowledged heads, acknowledged heads lost) and
# exits non-zero when any run lost something or failed.
set -euo pipefail

rounds=${1:?usage: scripts/crash-campaign.sh N}
pg_rounds=${PG_ROUNDS:-$rounds}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

nice -n "${CRASH_NICE:-10}" cargo build -p buurtsync-server
nice -n "${CRASH_NICE:-10}" cargo test -p buurtsync-e2e --test crash --no-run

pg_dir=$(mktemp -d "${TMPDIR:-/tmp}/buurtsync-pg.XXXXXX")
log=$(mktemp)
trap 'bash scripts/ensure-postgres.sh stop "$pg_dir"; rm -f "$log"' EXIT
BUURTSYNC_TEST_POSTGRES_URL=$(bash scripts/ensure-postgres.sh start "$pg_dir")
export BUURTSYNC_TEST_POSTGRES_URL

status=0
run() {
  local name=$1
  shift
  local started=$SECONDS
  if ! env "$@" nice -n "${CRASH_NICE:-10}" cargo test -q -p buurtsync-e2e --test crash "$name" \
      -- --exact --nocapture >"$log" 2>&1; then
    status=1
    tail -n 40 "$log" >&2
  fi
  grep -h "crash test seed\|crash campaign:" "$log" || echo "crash campaign: $name printed no figures" >&2
  echo "  ($name: $((SECONDS - started)) s wall)"
}

run sigkill_under_load_loses_nothing_acknowledged BUURTSYNC_CRASH_ROUNDS="$rounds"
run sigkill_of_a_postgres_node_loses_nothing_acknowledged BUURTSYNC_CRASH_PG_ROUNDS="$pg_rounds"
exit "$status"
