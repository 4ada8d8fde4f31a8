#!/usr/bin/env bash
# A private, throwaway PostgreSQL cluster for the tests.
#
#   scripts/ensure-postgres.sh start DIR   # prints the URL (postgres://…) on stdout
#   scripts/ensure-postgres.sh stop DIR    # stops the cluster and removes DIR
#
# Installs Debian's postgresql with apt-get when no initdb is found (the CI machine has
# none; we are root there). The cluster lives in DIR, listens on a free loopback port
# only, trusts local connections, and runs with fsync off: it exists for one test run.
# initdb refuses to run as root, so as root the cluster runs as the `postgres` user.
set -euo pipefail

action=${1:?usage: ensure-postgres.sh start|stop DIR}
dir=${2:?usage: ensure-postgres.sh start|stop DIR}

log() { printf '%s\n' "$*" >&2; }

find_bin() {
  local found
  found=$(command -v initdb 2>/dev/null || true)
  if [ -z "$found" ]; then
    found=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)
  fi
  [ -n "$found" ] && dirname "$(readlink -f "$found")"
}

as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

case "$action" in
start)
  bin=$(find_bin || true)
  if [ -z "$bin" ]; then
    log "PostgreSQL not found: installing Debian's postgresql (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    # No system cluster on port 5432: we only need the binaries.
    mkdir -p /etc/postgresql-common/createcluster.d
    echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/buurtsync-no-main.conf
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends postgresql >&2
    bin=$(find_bin)
  fi
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$dir"
  fi
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
  as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; exit 1; }
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
    start >&2 || { cat "$dir/server.log" >&2; exit 1; }
  log "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (data in $dir)"
  echo "postgres://postgres@127.0.0.1:$port/postgres"
  ;;
stop)
  bin=$(find_bin || true)
  if [ -n "$bin" ] && [ -f "$dir/data/postmaster.pid" ]; then
    as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >&2 || true
  fi
  rm -rf "$dir"
  ;;
*)
  log "unknown action $action"
  exit 2
  ;;
esac
