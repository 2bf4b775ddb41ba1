#!/usr/bin/env bash
# Fuzzes the running `app` with schemathesis (from PyPI) against its own OpenAPI document
# (/api/openapi.json): every operation, anonymous and with an admin token. Fails on any 5xx, and
# on any response whose status, content type, headers or body the document does not describe.
#
# Needs PostgreSQL and Redis: run after `scripts/services.sh start DIR && . DIR/env.sh`
# (scripts/test.sh does). Schemathesis is kept in target/tools between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
: "${PLATFORM_TEST_DATABASE_URL:?start the services first: scripts/services.sh start DIR && . DIR/env.sh}"
: "${PLATFORM_TEST_REDIS_URL:?start the services first}"
examples=${API_CHECK_EXAMPLES:-60}

venv=$root/target/tools/api-venv
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv" 2>/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv"
  }
  "$venv/bin/pip" install --quiet --disable-pip-version-check schemathesis==4.32.5
fi

cargo build --locked --quiet -p app
cargo build --locked --quiet -p platform-test-support --bin chat-server
work=$(mktemp -d)
app_pid=
chat_pid=
cleanup() {
  local pid
  for pid in $app_pid $chat_pid; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

database=api_check_$$_$(date +%s)
# A Redis database of its own: the many failed logins of the run count against 127.0.0.1, and
# must not rate-limit the other tests sharing this Redis.
redis_url=${PLATFORM_TEST_REDIS_URL%/}/9
redis-cli -u "$redis_url" flushdb >/dev/null
psql "$PLATFORM_TEST_DATABASE_URL" -qc "CREATE DATABASE $database" >/dev/null
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base=http://127.0.0.1:$port
# Ask answers from the local chat model (SmolLM2), briefly: the fuzzer asks many questions.
chat_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$root/target/debug/chat-server" --model "$("$root/scripts/models.sh" dir SmolLM2-135M-Instruct)" \
  --addr "127.0.0.1:$chat_port" >"$work/chat.log" 2>&1 &
chat_pid=$!
for _ in $(seq 1 150); do
  curl -sf "http://127.0.0.1:$chat_port/v1/models" >/dev/null && break
  sleep 0.2
done

# Webhook payload URLs are resolved when a hook is saved (the SSRF guard): the fuzzer makes up
# host names, and looking them up must not leave this machine. With root, app runs in a mount
# namespace whose resolv.conf names a loopback port nothing answers on, so every lookup fails
# at once (names in /etc/hosts, such as localhost, still resolve).
printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n' >"$work/resolv.conf"
isolate=()
if [ "$(id -u)" = 0 ] && unshare --mount true 2>/dev/null; then
  # shellcheck disable=SC2016
  isolate=(unshare --mount sh -c 'mount --bind "$0" /etc/resolv.conf && exec "$@"' "$work/resolv.conf")
else
  echo "api-check: not root: app resolves webhook hosts with this machine's resolver" >&2
fi
APP_HTTP_ADDR=127.0.0.1:$port \
APP_DATABASE_URL="${PLATFORM_TEST_DATABASE_URL%/*}/$database" \
APP_REDIS_URL=$redis_url \
APP_DOMAIN_URL=$base \
APP_SESSION_SECRET=$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(48)).decode())') \
APP_REPOS_ROOT=$work/repos APP_AVATAR_PATH=$work/avatars STORAGE_PATH=$work/files \
APP_AI_BASIC_URL=http://127.0.0.1:$chat_port/v1 APP_AI_API_KEY=unused \
APP_AI_CONTEXT_TOKENS=600 APP_AI_ANSWER_TOKENS=8 APP_AI_ASKS_PER_MINUTE=4 \
APP_EMBED_MODEL_PATH=$("$root/scripts/models.sh" dir all-MiniLM-L6-v2) APP_CODE_INDEX_PATH=$work/code-index \
  "${isolate[@]}" "$root/target/debug/app" >"$work/app.log" 2>&1 &
app_pid=$!
for _ in $(seq 1 150); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$base/readyz")" = 200 ] && break
  sleep 0.2
done
curl -sf "$base/readyz" >/dev/null || { echo "api-check: app is not ready" >&2; cat "$work/app.log" >&2; exit 1; }

json() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }
password="api check password $$"
curl -sf -X POST "$base/api/auth/register" -H 'content-type: application/json' \
  -d "{\"username\":\"fuzzer\",\"email\":\"fuzzer@example.com\",\"password\":\"$password\"}" >/dev/null
# The fuzzer's address counts as verified, as if it had followed the mailed link.
psql "${PLATFORM_TEST_DATABASE_URL%/*}/$database" -qc \
  "UPDATE users SET email_verified_at = now() WHERE username = 'fuzzer'" >/dev/null
csrf=$(curl -sf -c "$work/cookies" -X POST "$base/api/auth/login" -H 'content-type: application/json' \
  -d "{\"login\":\"fuzzer\",\"password\":\"$password\"}" | json "['csrf_token']")
# Generated ids are mostly small numbers: number the fuzzer's own token far away from them, so
# DELETE /api/user/tokens/{id} does not revoke the credential the run depends on.
psql "${PLATFORM_TEST_DATABASE_URL%/*}/$database" -qc \
  "ALTER TABLE access_tokens ALTER COLUMN id RESTART WITH 7318824663124411" >/dev/null
token=$(curl -sf -b "$work/cookies" -X POST "$base/api/user/tokens" -H "x-csrf-token: $csrf" \
  -H 'content-type: application/json' -d '{"name":"fuzzer","scopes":["admin"]}' | json "['token']")
curl -sf -X POST "$base/api/repos" -H "authorization: Bearer $token" -H 'content-type: application/json' \
  -d '{"name":"engine","description":"fuzzed"}' >/dev/null

# Our rules (reserved names, password strength, token validity) are stricter than a JSON schema
# can say, so a schema-valid request may be refused with 422: that check alone is left out.
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,missing_required_header,unsupported_method,use_after_free,ensure_resource_availability
run() {
  # From the scratch directory, where schemathesis keeps its example cache.
  (cd "$work" && "$venv/bin/schemathesis" run "$base/api/openapi.json" --checks "$checks" --workers 2 \
    --no-color --seed "${API_CHECK_SEED:-20261125}" --generation-deterministic --request-timeout 60 "$@")
}
echo "schemathesis: authenticated ($examples examples per operation)"
run --max-examples "$examples" -H "Authorization: Bearer $token"
echo "schemathesis: anonymous"
run --max-examples 15
# The browsing routes once more, on a repository with a history that has everything they read
# (renames, binary files, symlinks, a submodule, tags), made now: the passes above may have
# renamed or deleted "engine".
curl -sf -X POST "$base/api/repos" -H "authorization: Bearer $token" -H 'content-type: application/json' \
  -d '{"name":"chronicle","description":"browsed"}' >/dev/null
bash platform-git/tests/fixtures/browse-history.sh "$work/fixture"
git -C "$work/fixture/history.git" push --quiet --mirror "$work/repos/fuzzer/chronicle.git"
curl -sf "$base/api/repos/fuzzer/chronicle/commits/v1.0" >/dev/null
cat >"$work/browse.toml" <<'TOML'
[parameters]
"path.owner" = "fuzzer"
"path.name" = "chronicle"
TOML
echo "schemathesis: browsing fuzzer/chronicle"
(cd "$work" && "$venv/bin/schemathesis" --config-file "$work/browse.toml" run "$base/api/openapi.json" \
  --checks "$checks" --workers 2 --no-color --seed "${API_CHECK_SEED:-20261125}" --generation-deterministic \
  --include-tag browsing --max-examples 30 -H "Authorization: Bearer $token")

if grep -E '"level":"(ERROR|error)"|panicked' "$work/app.log" >&2; then
  echo "api-check: the app logged errors during the run (above)" >&2
  exit 1
fi
echo "api-check: no 5xx, every response as documented"
