#!/usr/bin/env bash
# Runs the whole platform locally: PostgreSQL, Redis and NATS (installed if missing), generated
# development secrets, and all six services built from this checkout. Prints their URLs, then
# runs until Ctrl-C, when it stops everything it started.
#
#   scripts/run.sh            the chart's ports (3000, 8021 + 2222, 8084, 8083, 9090, 8081)
#   scripts/run.sh --smoke    free ports; exits 0 once every service answers 200 on /readyz
#
# State (databases, repositories, secrets, logs) lives in $PLATFORM_RUN_DIR (default .run/).
# Variables already set in the environment win over the generated ones, so
# APP_AI_BASIC_URL=... APP_AI_API_KEY=... scripts/run.sh points the AI features at a real API;
# without them ask-the-code answers from a small local chat model (SmolLM2-135M, whose answers are
# weak). Code search embeds with the local MiniLM model unless APP_EMBED_MODEL_NAME/_BASE_URL
# are set.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
smoke=false
[ "${1:-}" = "--smoke" ] && smoke=true

scripts/services.sh install
if $smoke; then run_dir=$(mktemp -d); else run_dir=${PLATFORM_RUN_DIR:-$root/.run}; fi
mkdir -p "$run_dir"/{data/repos,data/static/avatars,data/static/files,logs,secrets}
run_dir=$(cd "$run_dir" && pwd)

pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  scripts/services.sh stop "$run_dir/services" || true
  if $smoke; then rm -rf "$run_dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Development secrets, generated once and kept: a 48-byte session secret and an Ed25519 host key
# in the chart's hex form.
secrets=$run_dir/secrets
[ -s "$secrets/session_secret" ] || python3 -c 'import base64, os; print(base64.b64encode(os.urandom(48)).decode())' >"$secrets/session_secret"
[ -s "$secrets/ssh_host_key" ] || ssh-keygen -q -t ed25519 -N "" -C "platform-dev" -f "$secrets/ssh_host_key"
ssh_key_hex=$(od -An -v -tx1 <"$secrets/ssh_host_key" | tr -d ' \n')

echo "building the services..." >&2
cargo build --workspace --bins --quiet
bin=$root/target/debug

scripts/services.sh start "$run_dir/services"
# shellcheck disable=SC1091
. "$run_dir/services/env.sh"
psql_db="platform"
psql "$PLATFORM_TEST_DATABASE_URL" -qtAc "SELECT 1 FROM pg_database WHERE datname = '$psql_db'" | grep -q 1 \
  || psql "$PLATFORM_TEST_DATABASE_URL" -qc "CREATE DATABASE $psql_db" >/dev/null

declare -A port=(
  [app]=3000 [gitserver]=8021 [email_worker]=8084 [git_hook]=8083 [metrics_aggregator]=9090 [static_server]=8081
)
ssh_port=2222
if $smoke; then
  for name in "${!port[@]}"; do port[$name]=$(free_port); done
  ssh_port=$(free_port)
fi

# Laid out as the chart mounts its volume: the repositories apart, and static_server's root
# holding the avatars and files app writes (as /data/avatars and /data/files are mounted
# inside the static directory there). static_server serves only STATIC_PUBLIC_DIRS of it.
export APP_REPOS_ROOT=${APP_REPOS_ROOT:-$run_dir/data/repos}
export STATIC_ROOT=${STATIC_ROOT:-$run_dir/data/static}
export APP_AVATAR_PATH=${APP_AVATAR_PATH:-$STATIC_ROOT/avatars}
export STORAGE_PATH=${STORAGE_PATH:-$STATIC_ROOT/files}
export APP_LOG_LEVEL=${APP_LOG_LEVEL:-info}
export APP_COOKIE_SECURE=${APP_COOKIE_SECURE:-false}
export APP_DOMAIN_URL=${APP_DOMAIN_URL:-http://localhost:${port[app]}}
export APP_DATABASE_URL="${PLATFORM_TEST_DATABASE_URL%/*}/$psql_db"
export APP_REDIS_URL=$PLATFORM_TEST_REDIS_URL
export NATS_URL=${NATS_URL:-$PLATFORM_TEST_NATS_URL}
if [ -z "${APP_AI_BASIC_URL:-}" ]; then
  # No chat API given: SmolLM2-135M-Instruct in a local OpenAI-compatible server, so that ask
  # works on one machine. Its answers are weak; set APP_AI_BASIC_URL for a real model.
  chat_port=11434
  $smoke && chat_port=$(free_port)
  "$bin/chat-server" --model "$(scripts/models.sh dir SmolLM2-135M-Instruct)" \
    --addr "127.0.0.1:$chat_port" >"$run_dir/logs/chat-server.log" 2>&1 &
  pids+=($!)
  export APP_AI_BASIC_URL=http://127.0.0.1:$chat_port/v1
  export APP_AI_CHAT_MODEL=${APP_AI_CHAT_MODEL:-smollm2-135m-instruct}
  # On a CPU the small model reads a prompt at about 200 tokens a second and writes slowly.
  export APP_AI_CONTEXT_TOKENS=${APP_AI_CONTEXT_TOKENS:-2000} APP_AI_ANSWER_TOKENS=${APP_AI_ANSWER_TOKENS:-256}
  export APP_AI_FIRST_TOKEN_SECONDS=${APP_AI_FIRST_TOKEN_SECONDS:-60} APP_AI_TIMEOUT_SECONDS=${APP_AI_TIMEOUT_SECONDS:-120}
fi
export APP_AI_API_KEY=${APP_AI_API_KEY:-local}
# Code search with nothing configured: the MiniLM model in-process (installed by
# scripts/models.sh) and the embedded vector store, owned by app, so no Qdrant and no API.
if [ -z "${APP_EMBED_MODEL_NAME:-}${APP_EMBED_MODEL_BASE_URL:-}" ]; then
  export APP_EMBED_MODEL_PATH=${APP_EMBED_MODEL_PATH:-$(scripts/models.sh dir all-MiniLM-L6-v2)}
fi
export APP_CODE_INDEX_PATH=${APP_CODE_INDEX_PATH:-$run_dir/data/code-index}
if [ -z "${APP_SMTP_HOST:-}" ]; then
  # No relay given: mail goes to a local server that keeps each message as JSON in .run/mail.
  smtp_port=2525
  $smoke && smtp_port=$(free_port)
  mkdir -p "$run_dir/mail"
  /usr/bin/python3 "$root/test-support/smtp_capture.py" --port "$smtp_port" --dir "$run_dir/mail" \
    >"$run_dir/logs/smtp.log" 2>&1 &
  pids+=($!)
  export APP_SMTP_HOST=127.0.0.1 APP_SMTP_PORT=$smtp_port APP_SMTP_TLS=none
fi
export APP_SMTP_PASSWORD=${APP_SMTP_PASSWORD:-local}
export APP_SESSION_SECRET=${APP_SESSION_SECRET:-$(cat "$secrets/session_secret")}
export APP_SSH_SERVER_PRIVATE_KEY=${APP_SSH_SERVER_PRIVATE_KEY:-$ssh_key_hex}
export APP_SSH_PORT=$ssh_port
# metrics_aggregator scrapes every service (a fixed list here; DNS discovery in the chart) and
# every service ships its log lines to it. LOKI_URL, when set, is where it forwards them.
targets=()
for name in app gitserver email_worker git_hook metrics_aggregator static_server; do
  targets+=("$name=http://127.0.0.1:${port[$name]}/metrics")
done
export APP_METRICS_TARGETS=${APP_METRICS_TARGETS:-$(IFS=,; echo "${targets[*]}")}
export APP_METRICS_SCRAPE_INTERVAL_SECONDS=${APP_METRICS_SCRAPE_INTERVAL_SECONDS:-5}
export APP_METRICS_SCRAPE_TIMEOUT_SECONDS=${APP_METRICS_SCRAPE_TIMEOUT_SECONDS:-4}
export APP_LOG_PUSH_URL=${APP_LOG_PUSH_URL:-http://127.0.0.1:${port[metrics_aggregator]}}

for name in app gitserver email_worker git_hook metrics_aggregator static_server; do
  APP_INSTANCE="$name-0" APP_HTTP_ADDR="127.0.0.1:${port[$name]}" "$bin/$name" >"$run_dir/logs/$name.log" 2>&1 &
  pids+=($!)
done

deadline=$(( $(date +%s) + 90 ))
for name in app gitserver email_worker git_hook metrics_aggregator static_server; do
  url="http://127.0.0.1:${port[$name]}/readyz"
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "$url")" = 200 ]; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "run.sh: $name is not ready at $url; its log:" >&2
      tail -20 "$run_dir/logs/$name.log" >&2
      curl -s "$url" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
done

echo
echo "The platform is running (logs in $run_dir/logs):"
for name in app gitserver email_worker git_hook metrics_aggregator static_server; do
  printf '  %-19s http://127.0.0.1:%s   (/readyz 200)\n' "$name" "${port[$name]}"
done
printf '  %-19s %s\n' "all metrics" "http://127.0.0.1:${port[metrics_aggregator]}/metrics/all"
printf '  %-19s %s\n' "PostgreSQL" "$APP_DATABASE_URL" "Redis" "$APP_REDIS_URL" "NATS" "$NATS_URL" \
  "SMTP" "$APP_SMTP_HOST:$APP_SMTP_PORT"
[ -d "$run_dir/mail" ] && printf '  %-19s %s\n' "sent mail" "$run_dir/mail/*.json"
printf '  %-19s %s (%s)\n' "chat model" "$APP_AI_BASIC_URL" "${APP_AI_CHAT_MODEL:-gpt-4o-mini}"

if $smoke; then
  echo "run.sh: all six services answered 200 on /readyz"
  if [ -n "${chat_port:-}" ]; then
    chat_ready=false
    for _ in $(seq 1 100); do
      curl -sf "$APP_AI_BASIC_URL/models" >/dev/null && { chat_ready=true; break; }
      sleep 0.2
    done
    $chat_ready || { echo "run.sh: the local chat model does not answer; its log:" >&2
      tail -20 "$run_dir/logs/chat-server.log" >&2; exit 1; }
    echo "run.sh: the local chat model answers at $APP_AI_BASIC_URL"
  fi
  # What app stores under APP_AVATAR_PATH is what static_server serves, and a repository's
  # files are not.
  mkdir -p "$APP_AVATAR_PATH" "$APP_REPOS_ROOT/smoke"
  echo smoke >"$APP_AVATAR_PATH/smoke.txt"
  echo secret >"$APP_REPOS_ROOT/smoke/config"
  static="http://127.0.0.1:${port[static_server]}"
  [ "$(curl -s "$static/static/avatars/smoke.txt")" = smoke ] \
    || { echo "run.sh: static_server does not serve APP_AVATAR_PATH" >&2; exit 1; }
  for path in repos/smoke/config static/repos/smoke/config ../repos/smoke/config; do
    code=$(curl -s --path-as-is -o /dev/null -w '%{http_code}' "$static/$path")
    [ "$code" = 404 ] || { echo "run.sh: static_server answered $code for /$path" >&2; exit 1; }
  done
  echo "run.sh: static_server serves avatars and no repository file"
  for name in app gitserver email_worker git_hook metrics_aggregator static_server; do
    curl -s -D - -o /dev/null "http://127.0.0.1:${port[$name]}/no-such-path" \
      | grep -qi '^x-content-type-options: nosniff' \
      || { echo "run.sh: $name answered without X-Content-Type-Options: nosniff" >&2; exit 1; }
  done
  echo "run.sh: every service answers with X-Content-Type-Options: nosniff"
  # One scrape of the aggregator shows every service up; it is kept for the dashboards' check.
  merged="http://127.0.0.1:${port[metrics_aggregator]}/metrics/all"
  deadline=$(( $(date +%s) + 60 ))
  for name in app gitserver email_worker git_hook metrics_aggregator static_server; do
    until curl -sf "$merged" | grep -q "^up{service=\"$name\",instance=\"127.0.0.1:${port[$name]}\"} 1 "; do
      if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "run.sh: the aggregator does not show $name up at $merged:" >&2
        curl -s "$merged" | grep '^up' >&2 || true
        exit 1
      fi
      sleep 0.5
    done
  done
  echo "run.sh: the aggregator's /metrics/all shows all six services up"
  if [ -n "${PLATFORM_METRICS_DUMP:-}" ]; then
    curl -sf "$merged" >"$PLATFORM_METRICS_DUMP"
    echo "run.sh: the merged exposition is in $PLATFORM_METRICS_DUMP ($(grep -c '^# TYPE' "$PLATFORM_METRICS_DUMP") families)"
  fi
  exit 0
fi
echo "Press Ctrl-C to stop."
wait -n "${pids[@]}" || true
echo "run.sh: a service exited; stopping" >&2
exit 1
