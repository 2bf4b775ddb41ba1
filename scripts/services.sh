#!/usr/bin/env bash
# The real services tests and local runs use: PostgreSQL, Redis (append-only) and NATS JetStream,
# each on a free loopback port inside one directory.
#   scripts/services.sh install        installs what is missing with apt-get (Debian)
#   scripts/services.sh start DIR      starts all three and writes DIR/env.sh with their URLs
#   scripts/services.sh stop DIR       stops whatever DIR/env.sh describes
# DIR/env.sh exports PLATFORM_TEST_DATABASE_URL (an admin URL: tests create their own
# databases), PLATFORM_TEST_REDIS_URL and PLATFORM_TEST_NATS_URL, and the directory of the local
# embedding model and of the local chat model (PLATFORM_TEST_EMBED_MODEL_DIR,
# PLATFORM_TEST_CHAT_MODEL_DIR, fetched by install through scripts/models.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_port() { # PORT NAME LOGFILE
  local i
  for i in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "services.sh: $2 did not open port $1; its log:" >&2
  tail -20 "$3" >&2 || true
  return 1
}

install() {
  local missing=()
  compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || missing+=(postgresql)
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v nats-server >/dev/null || missing+=(nats-server)
  command -v git >/dev/null || missing+=(git)
  command -v ssh >/dev/null || missing+=(openssh-client)
  command -v ssh-keygen >/dev/null || missing+=(openssh-client)
  command -v python3 >/dev/null || missing+=(python3)
  command -v curl >/dev/null || missing+=(curl)
  command -v runuser >/dev/null || missing+=(util-linux)
  command -v openssl >/dev/null || missing+=(openssl)
  # The metrics tests scrape the aggregator with a real Prometheus; promtool checks the alerts.
  { command -v prometheus && command -v promtool; } >/dev/null || missing+=(prometheus)
  # The capturing SMTP server of the mail tests runs on Debian's Python.
  /usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null || missing+=(python3-aiosmtpd)
  # The embedding model the search tests run in-process (and their embeddings test server).
  "$here/models.sh" install
  if [ ${#missing[@]} -eq 0 ]; then return 0; fi
  echo "services.sh: installing ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian's postgresql package starts a system cluster; ours run in their own directories.
  if [[ " ${missing[*]} " == *" postgresql "* ]]; then
    $sudo pg_ctlcluster --force "$(ls /usr/lib/postgresql | sort -V | tail -1)" main stop 2>/dev/null || true
  fi
  # Debian's prometheus package may start a system server on 9090, the aggregator's port.
  if [[ " ${missing[*]} " == *" prometheus "* ]]; then
    $sudo pkill -x prometheus 2>/dev/null || true
    $sudo pkill -x prometheus-node-exporter 2>/dev/null || true
  fi
}

start() {
  local dir=$1
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local pg_port redis_port nats_port nats_monitor
  pg_port=$(free_port); redis_port=$(free_port); nats_port=$(free_port); nats_monitor=$(free_port)

  "$here/postgres.sh" start "$dir/postgres" "$pg_port"

  mkdir -p "$dir/redis"
  redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$dir/redis" --appendonly yes \
    --save "" --daemonize yes --pidfile "$dir/redis/redis.pid" --logfile "$dir/redis/redis.log"
  wait_for_port "$redis_port" redis "$dir/redis/redis.log"

  mkdir -p "$dir/nats"
  nats-server -js -a 127.0.0.1 -p "$nats_port" -m "$nats_monitor" -sd "$dir/nats" \
    -P "$dir/nats/nats.pid" -l "$dir/nats/nats.log" </dev/null >/dev/null 2>&1 &
  wait_for_port "$nats_port" nats "$dir/nats/nats.log"

  cat >"$dir/env.sh" <<ENV
export PLATFORM_SERVICES_DIR='$dir'
export PLATFORM_TEST_DATABASE_URL='postgres://postgres@127.0.0.1:$pg_port/postgres'
export PLATFORM_TEST_REDIS_URL='redis://127.0.0.1:$redis_port'
export PLATFORM_TEST_NATS_URL='nats://127.0.0.1:$nats_port'
export PLATFORM_TEST_NATS_MONITOR_URL='http://127.0.0.1:$nats_monitor'
export PLATFORM_TEST_EMBED_MODEL_DIR='$("$here/models.sh" dir all-MiniLM-L6-v2)'
export PLATFORM_TEST_CHAT_MODEL_DIR='$("$here/models.sh" dir SmolLM2-135M-Instruct)'
ENV
  echo "services.sh: PostgreSQL on $pg_port, Redis on $redis_port, NATS on $nats_port (in $dir)" >&2
}

stop() {
  local dir=$1
  [ -d "$dir" ] || return 0
  [ -f "$dir/postgres/postmaster.pid" ] && "$here/postgres.sh" stop "$dir/postgres" || true
  local pidfile pid pids=()
  for pidfile in "$dir/redis/redis.pid" "$dir/nats/nats.pid"; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null && pids+=("$pid")
  done
  # Wait (up to 10 s) for them to exit: Redis writes its files on the way out, and whoever
  # removes DIR next must not race it.
  local waited=0 alive
  while [ "$waited" -lt 100 ]; do
    alive=false
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=true; done
    $alive || break
    sleep 0.1
    waited=$((waited + 1))
  done
}

case "${1:-}" in
  install) install ;;
  start) start "${2:?usage: services.sh start DIR}" ;;
  stop) stop "${2:?usage: services.sh stop DIR}" ;;
  *) echo "usage: services.sh install | start DIR | stop DIR" >&2; exit 2 ;;
esac
