#!/usr/bin/env bash
# Static files: static_server against nginx (Debian's, sendfile on, logging off) serving the same
# directory, with wrk on loopback: a 4 KiB file and a 10 MiB file. Each (file, server) pair runs
# BENCH_RUNS times (default 5) for BENCH_SECONDS (default 8) with 2 threads and 32 connections,
# alternating servers; the table shows medians of requests per second, of throughput and of the
# server's CPU time (user + system) per request, and the ratio static_server / nginx. On a small,
# shared machine the CPU time per request varies far less between runs than requests per second.
#
# Usage: scripts/bench.sh static   (or this script directly; it needs no database)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${BENCH_RUNS:-5}
seconds=${BENCH_SECONDS:-8}

for tool in nginx wrk; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk >/dev/null
  }
done
nginx=$(command -v nginx || echo /usr/sbin/nginx)

echo "building static_server (release)..." >&2
cargo build --release --locked --quiet -p static_server

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid" 2>/dev/null)" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
wait_for() { # PORT
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done
  echo "nothing listens on $1" >&2; return 1
}

root=$work/root
mkdir -p "$root/media"
# nginx's workers run as an unprivileged user: they must be able to read the files.
chmod 755 "$work"
head -c 4096 /dev/urandom >"$root/media/small.bin"
head -c $((10 * 1024 * 1024)) /dev/urandom >"$root/media/large.bin"

ours=$(free_port)
STATIC_ROOT=$root APP_HTTP_ADDR=127.0.0.1:$ours APP_LOG_LEVEL=warn \
  target/release/static_server >"$work/static_server.log" 2>&1 &
pids+=($!)

theirs=$(free_port)
cat >"$work/nginx.conf" <<CONF
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
daemon off;
events { worker_connections 1024; }
http {
  include /etc/nginx/mime.types;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  access_log off;
  keepalive_requests 100000;
  client_body_temp_path $work/nginx-body;
  proxy_temp_path $work/nginx-proxy;
  fastcgi_temp_path $work/nginx-fastcgi;
  uwsgi_temp_path $work/nginx-uwsgi;
  scgi_temp_path $work/nginx-scgi;
  server {
    listen 127.0.0.1:$theirs;
    root $root;
    add_header X-Content-Type-Options nosniff;
  }
}
CONF
"$nginx" -c "$work/nginx.conf" -e "$work/nginx-error.log" &
pids+=($!)
wait_for "$ours"
wait_for "$theirs"
for port in "$ours" "$theirs"; do
  curl -sf -o /dev/null "http://127.0.0.1:$port/media/small.bin" || {
    echo "port $port does not serve" >&2; tail -n 5 "$work"/*.log >&2; exit 1
  }
done

# CPU time (user + system, in clock ticks) used so far by the processes in PIDS.
cpu_ticks() { # PID...
  for pid in "$@"; do awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0; done |
    awk '{ t += $1 } END { print t + 0 }'
}
ticks_per_second=$(getconf CLK_TCK)
our_pid=${pids[0]}
nginx_pids() { local master; master=$(cat "$work/nginx.pid"); echo "$master" $(pgrep -P "$master"); }

# wrk prints "Requests/sec: N", "Transfer/sec: N.NNMB" (or KB, GB) and "N requests in ...".
measure() { # PORT FILE PID... -> "rps mib_per_s cpu_us_per_request"
  local port=$1 file=$2; shift 2
  local before after
  before=$(cpu_ticks "$@")
  local report; report=$(wrk -t2 -c32 -d"${seconds}s" "http://127.0.0.1:$port/media/$file")
  after=$(cpu_ticks "$@")
  awk -v used=$((after - before)) -v hz="$ticks_per_second" '
    /^Requests\/sec:/ { rps = $2 }
    / requests in / { requests = $1 }
    /^Transfer\/sec:/ {
      v = $2; unit = v; sub(/[0-9.]+/, "", unit); sub(/[A-Za-z]+$/, "", v)
      f = (unit == "GB") ? 1024 : (unit == "MB") ? 1 : (unit == "KB") ? 1 / 1024 : 1 / 1048576
      mib = v * f
    }
    END { printf "%.0f %.1f %.1f\n", rps, mib, (requests > 0) ? used / hz * 1e6 / requests : 0 }' <<<"$report"
}

printf '\n%-8s | %-34s | %-34s | %-12s | %-12s\n' "file" "static_server (req/s, MiB/s, CPU)" "nginx (req/s, MiB/s, CPU)" "req/s ratio" "MiB/s ratio"
printf -- '---------+------------------------------------+------------------------------------+--------------+-------------\n'
for file in small.bin large.bin; do
  : >"$work/ours.txt"; : >"$work/theirs.txt"
  for _ in $(seq 1 "$runs"); do
    measure "$ours" "$file" "$our_pid" >>"$work/ours.txt"
    # shellcheck disable=SC2046 # one word per process id
    measure "$theirs" "$file" $(nginx_pids) >>"$work/theirs.txt"
  done
  column_median() { cut -d' ' -f"$1" "$2" | median; }
  our_rps=$(column_median 1 "$work/ours.txt"); their_rps=$(column_median 1 "$work/theirs.txt")
  our_mib=$(column_median 2 "$work/ours.txt"); their_mib=$(column_median 2 "$work/theirs.txt")
  our_cpu=$(column_median 3 "$work/ours.txt"); their_cpu=$(column_median 3 "$work/theirs.txt")
  label=$([ "$file" = small.bin ] && echo "4 KiB" || echo "10 MiB")
  ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }'; }
  printf '%-8s | %8s %9s %10s | %8s %9s %10s | %11sx | %11sx\n' "$label" \
    "$our_rps" "$our_mib" "${our_cpu}us" "$their_rps" "$their_mib" "${their_cpu}us" \
    "$(ratio "$our_rps" "$their_rps")" "$(ratio "$our_mib" "$their_mib")"
done
echo "(median of $runs runs of ${seconds}s each, wrk -t2 -c32, alternating; CPU: the server's user + system"
echo " time per request; goal: at least 0.90x)"
