#!/usr/bin/env bash
# Git over HTTP and SSH: gitserver against git's own http-backend behind nginx + fcgiwrap, and
# against OpenSSH's sshd running git-shell, on the same repository in the same run, with a local
# `git clone --no-local` as the floor. Both SSH servers are driven by the same OpenSSH client with
# the same cipher (chacha20-poly1305) and key.
#
# The repository is built from the Rust crate sources in cargo's registry (one commit per crate,
# a few hundred commits and several hundred MB of source). A second one, made with fast-import,
# has 3,000 commits on two branches and 333 annotated tags: pushing all of it to an empty
# repository is the mirroring a forge's users do when they move a project. Each operation runs BENCH_RUNS times
# (default 9) per server, alternating; the table shows medians, and the peak resident memory of
# each server's own processes (gitserver; nginx and fcgiwrap), not of the git processes both
# spawn.
#
# Usage: scripts/bench.sh git   (or this script, with PLATFORM_TEST_* from scripts/services.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
: "${PLATFORM_TEST_DATABASE_URL:?start the services first: scripts/services.sh start DIR && . DIR/env.sh}"
runs=${BENCH_RUNS:-9}

for tool in nginx fcgiwrap sshd; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx fcgiwrap openssh-server >/dev/null
  }
done
nginx=$(command -v nginx || echo /usr/sbin/nginx)
fcgiwrap=$(command -v fcgiwrap || echo /usr/sbin/fcgiwrap)
# Both servers run the same git: the one on PATH, and its own http-backend.
http_backend=$(git --exec-path)/git-http-backend

echo "building gitserver (release)..." >&2
cargo build --release --locked --quiet -p gitserver

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
peak_rss_mib() { # the sum of VmHWM over the given pids, in MiB
  local total=0 pid kib
  for pid in "$@"; do
    kib=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
    total=$((total + ${kib:-0}))
  done
  echo $((total / 1024))
}

echo "building the repository from cargo's registry sources..." >&2
source_repo=$work/source
# shellcheck source=scripts/bench-repo.sh
. scripts/bench-repo.sh # build_registry_repo, shared with bench-browse.sh
build_registry_repo "$source_repo"
count=$registry_commits
git -C "$source_repo" gc --quiet
pack_mib=$(du -sm "$source_repo/.git/objects" | cut -f1)
tree_mib=$(du -sm --exclude=.git "$source_repo" | cut -f1)

# The same bare repository for both servers.
repos=$work/repos
mkdir -p "$repos/bench"
git clone --quiet --bare "$source_repo" "$repos/bench/registry.git"
git -C "$repos/bench/registry.git" config http.receivepack false

# gitserver, with a record for the repository.
database=bench_git_$$
psql "$PLATFORM_TEST_DATABASE_URL" -qc "CREATE DATABASE $database" >/dev/null
db_url="${PLATFORM_TEST_DATABASE_URL%/*}/$database"
ssh-keygen -q -t ed25519 -N "" -f "$work/host_key"
ssh-keygen -q -t ed25519 -N "" -f "$work/client_key"
our_port=$(free_port)
our_ssh_port=$(free_port)
APP_HTTP_ADDR=127.0.0.1:$our_port APP_DATABASE_URL=$db_url APP_REDIS_URL=$PLATFORM_TEST_REDIS_URL \
APP_DOMAIN_URL=http://127.0.0.1:$our_port APP_REPOS_ROOT=$repos APP_SSH_PORT=$our_ssh_port \
APP_SSH_SERVER_PRIVATE_KEY=$(od -An -v -tx1 <"$work/host_key" | tr -d ' \n') APP_LOG_LEVEL=warn \
  "$root/target/release/gitserver" >"$work/gitserver.log" 2>&1 &
gitserver_pid=$!
pids+=("$gitserver_pid")
for _ in $(seq 1 150); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$our_port/readyz")" = 200 ] && break
  sleep 0.2
done
psql "$db_url" -qc "INSERT INTO users (username, email, password_hash) VALUES ('bench', 'bench@example.com', 'none');
  INSERT INTO repositories (owner_id, name, default_branch) SELECT id, 'registry', 'main' FROM users;
  INSERT INTO ssh_keys (user_id, name, public_key, fingerprint) SELECT id, 'bench',
    '$(cut -d' ' -f1,2 "$work/client_key.pub")', '$(ssh-keygen -lf "$work/client_key.pub" | cut -d' ' -f2)' FROM users;" >/dev/null

# OpenSSH's sshd running git-shell, on a loopback port with its own configuration.
sshd_port=$(free_port)
cp "$work/client_key.pub" "$work/authorized_keys"
mkdir -p /run/sshd 2>/dev/null || true
cat >"$work/sshd_config" <<SSHD
Port $sshd_port
ListenAddress 127.0.0.1
HostKey $work/host_key
PidFile $work/sshd.pid
AuthorizedKeysFile $work/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
ForceCommand git-shell -c "\$SSH_ORIGINAL_COMMAND"
SSHD
sshd=$(command -v sshd || echo /usr/sbin/sshd)
"$sshd" -D -e -f "$work/sshd_config" 2>"$work/sshd.log" &
pids+=($!)
ssh_client="ssh -i $work/client_key -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no \
  -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -c chacha20-poly1305@openssh.com"

# git http-backend behind nginx and fcgiwrap.
their_port=$(free_port)
"$fcgiwrap" -c 4 -s "unix:$work/fcgiwrap.sock" &
fcgiwrap_pid=$!
pids+=("$fcgiwrap_pid")
mkdir -p "$work/nginx"
cat >"$work/nginx.conf" <<EOF
# Workers as the user running this script, who owns the socket and the repositories.
user $(id -un) $(id -gn);
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  fastcgi_temp_path $work/nginx/fastcgi;
  proxy_temp_path $work/nginx/proxy;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  server {
    listen 127.0.0.1:$their_port;
    client_max_body_size 0;
    location ~ ^/(.*/(HEAD|info/refs|objects/info/[^/]+|git-upload-pack|git-receive-pack))$ {
      fastcgi_pass unix:$work/fcgiwrap.sock;
      fastcgi_buffering off;
      fastcgi_request_buffering off;
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME $http_backend;
      fastcgi_param GIT_PROJECT_ROOT $repos;
      fastcgi_param GIT_HTTP_EXPORT_ALL "";
      fastcgi_param PATH_INFO /\$1;
    }
  }
}
EOF
for _ in $(seq 1 50); do [ -S "$work/fcgiwrap.sock" ] && break; sleep 0.1; done
"$nginx" -c "$work/nginx.conf" -e "$work/nginx/error.log" 2>/dev/null || "$nginx" -c "$work/nginx.conf"
sleep 0.5
server_pids() { # a master process and the workers it forked
  echo "$1"
  pgrep -P "$1" || true
}

ours=http://127.0.0.1:$our_port/bench/registry.git
theirs=http://127.0.0.1:$their_port/bench/registry.git
ours_ssh=ssh://git@127.0.0.1:$our_ssh_port/bench/registry.git
theirs_ssh=ssh://$(id -un)@127.0.0.1:$sshd_port$repos/bench/registry.git
export GIT_SSH_COMMAND=$ssh_client
sleep 0.5
for url in "$ours" "$theirs" "$ours_ssh" "$theirs_ssh"; do git ls-remote "$url" >/dev/null; done

# A history of 3,000 commits with an annotated tag on every ninth, and a second branch.
tagged=$work/tagged.git
git init --quiet --bare --initial-branch=main "$tagged"
python3 - <<'PY' | git -C "$tagged" fast-import --quiet
import sys
out = sys.stdout.buffer
def data(b):
    out.write(b"data %d\n" % len(b) + b + b"\n")
for n in range(1, 3001):
    out.write(b"commit refs/heads/main\nmark :%d\ncommitter B <b@example.com> %d +0000\n" % (n, 1700000000 + n))
    data(b"commit %d" % n)
    if n > 1:
        out.write(b"from :%d\n" % (n - 1))
    out.write(b"M 644 inline src/dir%d/file%d.txt\n" % (n % 50, n))
    data(b"line %d\n" % n * 20)
    if n % 9 == 0:
        out.write(b"tag v%d\nfrom :%d\ntagger B <b@example.com> %d +0000\n" % (n, n, 1700000000 + n))
        data(b"release %d" % n)
out.write(b"reset refs/heads/stable\nfrom :2000\n\n")
PY
tag_count=$(git -C "$tagged" tag | wc -l)
ref_count=$(git -C "$tagged" for-each-ref | wc -l)
push_token=plat_bench-push-token-$$
psql "$db_url" -qc "INSERT INTO access_tokens (user_id, name, token_hash, scopes)
  SELECT id, 'push', sha256('$push_token'::bytea), ARRAY['repo:write'] FROM users;" >/dev/null
time_push() { # side, run: a new empty repository on that side, then every branch and tag at once
  local side=$1 run=$2 url start end
  if [ "$side" = ours ]; then
    git init --quiet --bare --initial-branch=main "$repos/bench/push$run.git"
    psql "$db_url" -qc "INSERT INTO repositories (owner_id, name, default_branch)
      SELECT id, 'push$run', 'main' FROM users;" >/dev/null
    url=http://bench:$push_token@127.0.0.1:$our_port/bench/push$run.git
  else
    git init --quiet --bare --initial-branch=main "$repos/bench/theirs$run.git"
    git -C "$repos/bench/theirs$run.git" config http.receivepack true
    # What gitserver has git check in every push, so both do the same git work.
    git -C "$repos/bench/theirs$run.git" config receive.fsckObjects true
    url=http://127.0.0.1:$their_port/bench/theirs$run.git
  fi
  start=$(now)
  git -C "$tagged" push --quiet "$url" 'refs/heads/*:refs/heads/*' 'refs/tags/*:refs/tags/*'
  end=$(now)
  awk -v a="$start" -v b="$end" 'BEGIN { print b - a }'
}

# A clone twenty commits behind, copied before each incremental fetch.
git clone --quiet --bare --no-local "$source_repo" "$work/behind.git"
git -C "$work/behind.git" update-ref refs/heads/main "$(git -C "$source_repo" rev-parse HEAD~20)"
git -C "$work/behind.git" reflog expire --expire=now --all
git -C "$work/behind.git" gc --quiet --prune=now

time_clone() { # url, extra args...
  local url=$1 dest
  shift
  dest=$work/clone-$RANDOM$RANDOM
  local start end
  start=$(now)
  git clone --quiet --bare --no-local "$@" "$url" "$dest"
  end=$(now)
  rm -rf "$dest"
  awk -v a="$start" -v b="$end" 'BEGIN { print b - a }'
}
time_fetch() { # url
  local dest=$work/fetch-$RANDOM$RANDOM start end
  cp -r "$work/behind.git" "$dest"
  start=$(now)
  git -C "$dest" fetch --quiet --update-head-ok "$1" main:main
  end=$(now)
  rm -rf "$dest"
  awk -v a="$start" -v b="$end" 'BEGIN { print b - a }'
}

declare -A results
for run in $(seq 1 "$runs"); do
  echo "run $run of $runs..." >&2
  for side in ours theirs ours_ssh theirs_ssh; do
    url=${!side}
    results[full,$side]+="$(time_clone "$url") "
    results[depth1,$side]+="$(time_clone "$url" --depth 1) "
    results[fetch,$side]+="$(time_fetch "$url") "
  done
  results[push,ours]+="$(time_push ours "$run") "
  results[push,theirs]+="$(time_push theirs "$run") "
  results[full,floor]+="$(time_clone "$repos/bench/registry.git") "
  results[depth1,floor]+="$(time_clone "file://$repos/bench/registry.git" --depth 1) "
done

our_rss=$(peak_rss_mib "$gitserver_pid")
# shellcheck disable=SC2046
their_rss=$(peak_rss_mib $(server_pids "$(cat "$work/nginx.pid")") $(server_pids "$fcgiwrap_pid"))
echo
echo "repository: $count commits, ${tree_mib} MiB of files, ${pack_mib} MiB packed; git $(git --version | cut -d' ' -f3); median of $runs runs"
table() { # our side, their side, our title, their title
  printf '| %-22s | %14s | %24s | %6s | %14s |\n' operation "$3 (s)" "$4 (s)" ratio "local floor (s)"
  printf '|%s|%s|%s|%s|%s|\n' "------------------------" "----------------" "--------------------------" "--------" "----------------"
  local op o t f label
  for op in full depth1 fetch; do
    o=$(echo "${results[$op,$1]}" | tr ' ' '\n' | { grep . || true; } | median)
    t=$(echo "${results[$op,$2]}" | tr ' ' '\n' | { grep . || true; } | median)
    f=$(echo "${results[$op,floor]:-}" | tr ' ' '\n' | { grep . || true; } | median)
    case $op in full) label="full clone" ;; depth1) label="clone --depth 1" ;; fetch) label="fetch of 20 commits" ;; esac
    printf '| %-22s | %14.2f | %24.2f | %5.2fx | %14s |\n' "$label" "$o" "$t" \
      "$(awk -v a="$o" -v b="$t" 'BEGIN { print a / b }')" "$( [ -n "$f" ] && printf '%.2f' "$f" || echo '-')"
  done
}
echo
echo "HTTP"
table ours theirs "gitserver" "http-backend + nginx"
printf '| %-22s | %14s | %24s | %6s | %14s |\n' "peak RSS of the server" "${our_rss} MiB" "${their_rss} MiB" "" ""
echo
echo "Pushing $ref_count refs ($tag_count annotated tags, 3000 commits) to an empty repository over HTTP (receive.fsckObjects on both)"
o=$(echo "${results[push,ours]}" | tr ' ' '\n' | { grep . || true; } | median)
t=$(echo "${results[push,theirs]}" | tr ' ' '\n' | { grep . || true; } | median)
printf '| %-22s | %14s | %24s | %6s |\n' operation "gitserver (s)" "http-backend + nginx (s)" ratio
printf '|%s|%s|%s|%s|\n' "------------------------" "----------------" "--------------------------" "--------"
printf '| %-22s | %14.2f | %24.2f | %5.2fx |\n' "push of every ref" "$o" "$t" "$(awk -v a="$o" -v b="$t" 'BEGIN { print a / b }')"
echo
echo "SSH (the same OpenSSH client, key and cipher, chacha20-poly1305, for both)"
table ours_ssh theirs_ssh "gitserver" "sshd + git-shell"
