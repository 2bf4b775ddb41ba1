#!/usr/bin/env bash
# Starts or stops a throwaway PostgreSQL cluster on a loopback port.
#   scripts/postgres.sh start DATA_DIR PORT [OPTION...]   initialises DATA_DIR if empty, starts with
#                                            the server OPTIONs too (-c ssl=on ...), waits until ready
#   scripts/postgres.sh stop DATA_DIR         fast shutdown
# PostgreSQL refuses to run as root: as root, the cluster belongs to the "postgres" system user.
set -euo pipefail

pg_bin() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    [ -x "$dir/pg_ctl" ] && { echo "$dir"; return; }
  done
  echo "postgres.sh: no PostgreSQL server found; run scripts/services.sh install" >&2
  exit 1
}

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cmd=${1:?usage: postgres.sh start DATA_DIR PORT | stop DATA_DIR}
data=${2:?data directory required}
bin=$(pg_bin)

case "$cmd" in
  start)
    port=${3:?port required}
    shift 3
    extra="$*"
    if [ ! -f "$data/PG_VERSION" ]; then
      mkdir -p "$data"
      if [ "$(id -u)" = 0 ]; then
        chown postgres: "$data"
        # Every parent must be traversable by the cluster's owner.
        d=$(dirname "$data"); while [ "$d" != / ]; do chmod o+x "$d" 2>/dev/null || true; d=$(dirname "$d"); done
      fi
      as_owner "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --no-sync >"$data.initdb.log" 2>&1 \
        || { cat "$data.initdb.log" >&2; exit 1; }
    fi
    as_owner "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
      -o "-p $port -k $data -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 $extra" \
      start >/dev/null
    ;;
  stop)
    as_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null
    ;;
  *)
    echo "postgres.sh: unknown command $cmd" >&2
    exit 2
    ;;
esac
