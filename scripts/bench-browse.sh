#!/usr/bin/env bash
# Repository browsing: each read operation of `app`'s HTTP API (log, log of a path, tree, file
# contents, commit with its diff, compare of two tags, blame, archive) against the same
# operation with the git CLI run directly on the bare repository, in the same run.
#
# The repository is bench.sh git's (scripts/bench-repo.sh: one commit per crate of cargo's
# registry sources), with on top of it a series of 40 commits that write and then rewrite
# ranges of a 2,000-line file, blame/lines.txt, and two annotated tags, bench-a (a few crate
# commits before the series) and bench-b (the tip), whose comparison stays within the API's
# diff limits (at most 250 files, 50,000 added lines).
# The API is asked anonymously (the repository is public) with curl, and every answer must be
# 200; git writes to /dev/null. An API operation's time is curl's own (time_total: from the
# start of the connection to the last byte), without curl's start-up as a process (7 to 13 ms,
# libcurl loading its TLS, LDAP and other libraries) that no client of the API pays per
# request; a git command's time is its wall-clock time, start-up (about 1 ms) included. Each
# operation runs BENCH_RUNS times (default 9), API and CLI alternating, after one untimed run
# of each, whose API answers are checked against git's output (the same commits, entries,
# bytes, files, line counts, blame of every line and archive listing; a difference is printed
# with the table); the table shows medians, their ratio (the goal is at most 1.00x everywhere)
# and app's peak resident memory (VmHWM).
#
# Usage: scripts/bench.sh browse   (or this script, with PLATFORM_TEST_* from scripts/services.sh)
#   BENCH_RUNS=N   runs of each operation (default 9)
#   BENCH_API=0    the git CLI half alone: no app, the API column is left empty
set -Eeuo pipefail
trap 'echo "bench-browse: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
cd "$(dirname "$0")/.."
root=$(pwd)
: "${PLATFORM_TEST_DATABASE_URL:?start the services first: scripts/services.sh start DIR && . DIR/env.sh}"
: "${PLATFORM_TEST_REDIS_URL:?start the services first: scripts/services.sh start DIR && . DIR/env.sh}"
runs=${BENCH_RUNS:-9}
with_api=${BENCH_API:-1}

if [ "$with_api" = 1 ]; then
  echo "building app (release)..." >&2
  cargo build --release --locked --quiet -p app
fi

work=$(mktemp -d)
app_pid=
cleanup() {
  if [ -n "$app_pid" ]; then kill -TERM "$app_pid" 2>/dev/null || true; wait "$app_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
now() { now=${EPOCHREALTIME/,/.}; } # sets $now without a subshell, so timing costs no fork
urlencode() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe="/"))' "$1"; }
git_bench() { git -c user.name=bench -c user.email=bench@example.com -c gc.auto=0 "$@"; }

echo "building the repository from cargo's registry sources..." >&2
source_repo=$work/source
# shellcheck source=scripts/bench-repo.sh
. scripts/bench-repo.sh
build_registry_repo "$source_repo"
crate_tip=$(git -C "$source_repo" rev-parse HEAD)

# A 2,000-line file written once and then rewritten a range at a time, in 40 commits: its blame
# has many ranges from many commits.
mkdir -p "$source_repo/blame"
lines=$source_repo/blame/lines.txt
awk 'BEGIN { for (n = 1; n <= 2000; n++) printf "%04d r00 let value_%d = checksum(%d, \"first version of line %d\");\n", n, n, n * 7919 % 10007, n }' >"$lines"
git -C "$source_repo" add blame
git_bench -C "$source_repo" commit --quiet -m "blame: 2,000 lines"
blame_commits=1
for rev in $(seq 1 39); do
  first=$((rev * 397 % 1900 + 1))
  last=$((first + 10 + rev * 29 % 90))
  awk -v first="$first" -v last="$last" -v rev="$rev" '
    NR >= first && NR <= last { $0 = sprintf("%04d r%02d let value_%d = checksum(%d, \"line %d as of revision %d\");", NR, rev, NR, (NR * 7919 + rev * 104729) % 10007, NR, rev) }
    { print }' "$lines" >"$lines.new"
  mv "$lines.new" "$lines"
  git -C "$source_repo" add blame
  git_bench -C "$source_repo" commit --quiet -m "blame: rewrite lines $first to $last"
  blame_commits=$((blame_commits + 1))
done

# What a diff holds, to keep the API's diffs within its limits (300 files, 20,000 patch lines a
# file, 100,000 in all, files of 1 MiB at most) so that it does all the work git does.
diff_stats() { # git dir, from, to: "files added-lines most-lines-of-one-file largest-new-blob"
  git -C "$1" diff --numstat "$2" "$3" | awk '{ f++ } $1 != "-" { n += $1; if ($1 > m) m = $1 } END { printf "%d %d %d", f, n, m }'
  printf ' %d\n' "$(git -C "$1" diff-tree -r "$2" "$3" | awk '{ print $4 }' |
    git -C "$1" cat-file --batch-check='%(objectsize)' | sort -n | tail -1)"
}
within_limits() { # files added most largest
  [ "$1" -le 250 ] && [ "$2" -le 50000 ] && [ "$3" -le 15000 ] && [ "$4" -le $((1 << 20)) ]
}

# bench-b at the tip; bench-a as many crate commits back (at most 40) as keep the comparison
# within those limits.
back=0
while [ "$back" -lt 40 ] && [ "$back" -lt $((registry_commits - 1)) ]; do
  # shellcheck disable=SC2046
  within_limits $(diff_stats "$source_repo" "$crate_tip~$((back + 1))" HEAD) || break
  back=$((back + 1))
done
git_bench -C "$source_repo" tag -a bench-a -m "bench a" "$crate_tip~$back"
git_bench -C "$source_repo" tag -a bench-b -m "bench b" HEAD
git -C "$source_repo" gc --quiet
pack_mib=$(du -sm "$source_repo/.git/objects" | cut -f1)
tree_mib=$(du -sm --exclude=.git "$source_repo" | cut -f1)
repos=$work/repos
mkdir -p "$repos/bench"
bare=$repos/bench/registry.git
git clone --quiet --bare "$source_repo" "$bare"
rm -rf "$source_repo"

# What each operation reads.
g() { git -C "$bare" "$@"; }
# A crate added early: the log of its directory walks the whole history.
path_filter=crates/$(g log --reverse --format=%s main | sed -n 5p | sed 's/^add //')
# A source file of 20 to 50 KB, as close to 35 KB as there is.
file=$(g ls-tree -r -l main crates/ | awk '$2 == "blob" && $4 >= 20000 && $4 <= 50000 && $5 ~ /\.rs$/ {
  d = $4 - 35000; if (d < 0) d = -d; if (best == "" || d < bestd) { best = $5; bestd = d } } END { print best }')
file_bytes=$(g cat-file -s "main:$file")
# A crate's commit of 20 to 200 files within the limits, the one nearest 100 files.
commit=
while read -r _ sha; do
  read -r commit_files commit_lines most largest < <(diff_stats "$bare" "$sha^" "$sha")
  if within_limits "$commit_files" "$commit_lines" "$most" "$largest"; then commit=$sha; break; fi
done < <(g log --format=@%H --name-only "$(g rev-list --max-parents=0 main)..$crate_tip" | awk '
  /^@/ { if (sha != "") print sha, n; sha = substr($0, 2); n = 0; next }
  NF { n++ }
  END { if (sha != "") print sha, n }' | awk '$2 >= 20 && $2 <= 200 { d = $2 - 100; if (d < 0) d = -d; print d, $1 }' | sort -s -n -k1,1)
[ -n "$commit" ] || { echo "bench-browse: no crate commit of 20 to 200 files within the limits" >&2; exit 1; }
commit_subject=$(g log -1 --format=%s "$commit")
compare_commits=$(g rev-list --count bench-a..bench-b)
read -r compare_files compare_lines _ < <(diff_stats "$bare" bench-a bench-b)
# The tree after about ten crates.
archive=$(g rev-list --reverse main | sed -n 10p)
log_format='%H%x00%P%x00%an%x00%ae%x00%aI%x00%cn%x00%ce%x00%cI%x00%T%x00%B'

ops=(log log_path tree contents commit compare blame archive)
declare -A label cli_text api_path
label[log]="log of 30"
label[log_path]="log of 30, path filter"
label[tree]="tree"
label[contents]="contents of a file"
label[commit]="commit with its diff"
label[compare]="compare of two tags"
label[blame]="blame"
label[archive]="archive (tar.gz)"
api_path[log]="commits?sha=main&per_page=30"
api_path[log_path]="commits?sha=main&path=$(urlencode "$path_filter")&per_page=30"
api_path[tree]="git/trees/main?path=crates"
api_path[contents]="contents/$(urlencode "$file")?ref=main"
api_path[commit]="commits/$commit"
api_path[compare]="compare/bench-a...bench-b"
api_path[blame]="blame/blame/lines.txt?ref=main"
api_path[archive]="tarball/$archive"
cli_text[log]="git log -n30 --format=<all fields> main"
cli_text[log_path]="git log -n30 --format=<all fields> main -- $path_filter"
cli_text[tree]="git ls-tree -l main crates/"
cli_text[contents]="git cat-file -p main:$file"
cli_text[commit]="git show --numstat --patch --format=fuller $commit"
cli_text[compare]="git log --format=<all fields> bench-a..bench-b; git diff --numstat --patch bench-a...bench-b"
cli_text[blame]="git blame --porcelain main -- blame/lines.txt"
cli_text[archive]="git archive --format=tar.gz --prefix=registry-$archive/ $archive"
cli() { # the git CLI's side of an operation, output to /dev/null
  case $1 in
    log) g log -n30 --format="$log_format" main ;;
    log_path) g log -n30 --format="$log_format" main -- "$path_filter" ;;
    tree) g ls-tree -l main crates/ ;;
    contents) g cat-file -p "main:$file" ;;
    commit) g show --numstat --patch --format=fuller "$commit" ;;
    compare) g log --format="$log_format" bench-a..bench-b && g diff --numstat --patch bench-a...bench-b ;;
    blame) g blame --porcelain main -- blame/lines.txt ;;
    archive) g archive --format=tar.gz --prefix="registry-$archive/" "$archive" ;;
  esac >/dev/null
}

if [ "$with_api" = 1 ]; then
  database=bench_browse_$$
  psql "$PLATFORM_TEST_DATABASE_URL" -qc "CREATE DATABASE $database" >/dev/null
  db_url="${PLATFORM_TEST_DATABASE_URL%/*}/$database"
  port=$(free_port)
  nats=()
  [ -n "${PLATFORM_TEST_NATS_URL:-}" ] && nats=(NATS_URL="$PLATFORM_TEST_NATS_URL")
  env APP_HTTP_ADDR="127.0.0.1:$port" APP_DATABASE_URL="$db_url" APP_REDIS_URL="$PLATFORM_TEST_REDIS_URL" \
    "${nats[@]}" APP_DOMAIN_URL="http://127.0.0.1:$port" \
    APP_SESSION_SECRET="$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(48)).decode())')" \
    APP_REPOS_ROOT="$repos" APP_AVATAR_PATH="$work/avatars" STORAGE_PATH="$work/files" \
    APP_AI_BASIC_URL=http://127.0.0.1:9/v1 APP_AI_API_KEY=unused APP_LOG_LEVEL=warn \
    "$root/target/release/app" >"$work/app.log" 2>&1 &
  app_pid=$!
  for _ in $(seq 1 150); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ] && break
    sleep 0.2
  done
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || {
    echo "bench-browse: app is not ready; its log:" >&2; tail -30 "$work/app.log" >&2; exit 1
  }
  psql "$db_url" -qc "INSERT INTO users (username, email, password_hash) VALUES ('bench', 'bench@example.com', 'none');
    INSERT INTO repositories (owner_id, name, default_branch, is_private)
      SELECT id, 'registry', 'main', false FROM users WHERE username = 'bench';" >/dev/null
  base=http://127.0.0.1:$port/api/repos/bench/registry
fi

elapsed=
time_api() { # op: one request, which must answer 200; sets elapsed (ms), as curl times it
  local url=$base/${api_path[$1]} code seconds
  read -r code seconds < <(curl -s -o /dev/null -w '%{http_code} %{time_total}\n' "$url")
  if [ "$code" != 200 ]; then
    echo "bench-browse: GET $url answered $code:" >&2
    curl -s "$url" | head -c 2000 >&2
    echo >&2
    exit 1
  fi
  elapsed=$(awk -v s="$seconds" 'BEGIN { print s * 1000 }')
}
time_cli() { # op: sets elapsed (ms)
  local start
  now; start=$now
  cli "$1"
  now
  elapsed=$(awk -v a="$start" -v b="$now" 'BEGIN { print (b - a) * 1000 }')
}

# One untimed run of each, then the timed runs. The API's answers of the untimed run are
# checked against git's: a benchmark of answers that left work out would say nothing.
for op in "${ops[@]}"; do
  cli "$op"
  if [ "$with_api" = 1 ]; then
    time_api "$op"
    curl -s -o "$work/answer-$op" "$base/${api_path[$op]}"
    echo "warm-up: GET ${api_path[$op]}: 200, $(wc -c <"$work/answer-$op") bytes" >&2
  fi
done
mismatches=
if [ "$with_api" = 1 ]; then
  g log -n30 --format=%H main >"$work/git-log"
  g log -n30 --format=%H main -- "$path_filter" >"$work/git-log_path"
  g ls-tree main crates/ >"$work/git-tree"
  g cat-file -p "main:$file" >"$work/git-contents"
  g diff-tree --numstat -r "$commit^" "$commit" >"$work/git-commit"
  g log --reverse --format=%H bench-a..bench-b >"$work/git-compare-log"
  g diff --numstat bench-a...bench-b >"$work/git-compare"
  g blame --porcelain main -- blame/lines.txt >"$work/git-blame"
  g archive --format=tar.gz --prefix="registry-$archive/" "$archive" >"$work/git-archive"
  mismatches=$(python3 - "$work" <<'PY'
import base64, gzip, io, json, re, sys, tarfile
work = sys.argv[1]
def answer(op):
    with open(f"{work}/answer-{op}", "rb") as f:
        return f.read()
def lines(name):
    with open(f"{work}/git-{name}", "rb") as f:
        return f.read().decode("utf-8", "replace").splitlines()
problems = []
def check(op, what, ok):
    if not ok:
        problems.append(f"  {op}: {what}")
try:
    for op in ("log", "log_path"):
        shas = [c["sha"] for c in json.loads(answer(op))]
        check(op, f"{len(shas)} commits, not git's {len(lines(op))} in its order", shas == lines(op))
    tree = json.loads(answer("tree"))
    ours = sorted(e["sha"] for e in tree["tree"])
    theirs = sorted(l.split()[2] for l in lines("tree"))
    check("tree", f"{len(ours)} entries, not git's {len(theirs)}", ours == theirs and not tree["truncated"])
    item = json.loads(answer("contents"))
    with open(f"{work}/git-contents", "rb") as f:
        check("contents", "content not git's bytes", base64.b64decode(item.get("content") or "") == f.read())
    def diff(op, api_files, numstat):
        theirs = {l.split("\t", 2)[2]: l.split("\t") for l in numstat}
        check(op, f"{len(api_files)} files, not git's {len(theirs)}", len(api_files) == len(theirs))
        left = [f["filename"] for f in api_files if f["truncated"] or (not f["binary"] and f["changes"] and not f.get("patch"))]
        check(op, f"{len(left)} files truncated or without a patch (first: {left[:1]})", not left)
        added = sum(f["additions"] for f in api_files)
        want = sum(int(t[0]) for t in theirs.values() if t[0] != "-")
        check(op, f"{added} lines added, not git's {want}", added == want)
    commit = json.loads(answer("commit"))
    diff("commit", commit.get("files") or [], lines("commit"))
    compare = json.loads(answer("compare"))
    check("compare", "commits not git's", [c["sha"] for c in compare["commits"]] == lines("compare-log"))
    diff("compare", compare["files"], lines("compare"))
    blame = json.loads(answer("blame"))
    ours = {}
    for r in blame["ranges"]:
        for n in range(r["starting_line"], r["ending_line"] + 1):
            ours[n] = r["commit"]
    theirs, header = {}, re.compile(r"^([0-9a-f]{40}) \d+ (\d+)")
    for l in lines("blame"):
        m = header.match(l)
        if m:
            theirs[int(m.group(2))] = m.group(1)
    wrong = sum(1 for n in theirs if ours.get(n) != theirs[n])
    check("blame", f"{wrong} of {len(theirs)} lines blamed on another commit than git's ({len(ours)} lines)", wrong == 0 and len(ours) == len(theirs))
    def listing(data):
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as t:
            return sorted((m.name.rstrip("/"), m.size, m.mode) for m in t.getmembers() if m.isfile())
    with open(f"{work}/git-archive", "rb") as f:
        ours, theirs = listing(answer("archive")), listing(f.read())
    sized = lambda listing: [entry[:2] for entry in listing]
    first = next(((a, b) for a, b in zip(sized(ours), sized(theirs)) if a != b), None)
    check("archive", f"{len(ours)} files, not git's {len(theirs)} with the same names and sizes"
          f" (first difference, API then git: {first})", sized(ours) == sized(theirs))
    modes = sorted({f"{a[2]:04o} where git has {b[2]:04o}" for a, b in zip(ours, theirs) if a[:2] == b[:2] and a[2] != b[2]})
    check("archive", f"file modes {', '.join(modes)} (git archive applies tar.umask, 0002 by default)", not modes)
except Exception as error:  # an answer not shaped as expected
    problems.append(f"  cannot read the answers: {type(error).__name__}: {error}")
print("\n".join(problems))
PY
  )
  if [ -n "$mismatches" ]; then
    echo "bench-browse: the API's answers differ from git's:" >&2
    echo "$mismatches" >&2
  fi
fi
declare -A results
for run in $(seq 1 "$runs"); do
  echo "run $run of $runs..." >&2
  for op in "${ops[@]}"; do
    if [ "$with_api" = 1 ]; then time_api "$op"; results[$op,api]+="$elapsed "; fi
    time_cli "$op"
    results[$op,cli]+="$elapsed "
  done
done
rss=
[ "$with_api" = 1 ] && rss=$(awk '/^VmHWM:/ { printf "%d MiB", $2 / 1024 }' "/proc/$app_pid/status")

echo
echo "repository: $registry_commits crate commits + $blame_commits on blame/lines.txt, ${tree_mib} MiB of files, ${pack_mib} MiB packed; git $(git --version | cut -d' ' -f3); median of $runs runs"
printf '| %-24s | %15s | %19s | %6s |\n' operation "API median (ms)" "git CLI median (ms)" ratio
printf '|%s|%s|%s|%s|\n' "--------------------------" "-----------------" "---------------------" "--------"
over=()
for op in "${ops[@]}"; do
  c=$(echo "${results[$op,cli]}" | tr ' ' '\n' | { grep . || true; } | median)
  if [ "$with_api" = 1 ]; then
    a=$(echo "${results[$op,api]}" | tr ' ' '\n' | { grep . || true; } | median)
    ratio=$(awk -v a="$a" -v b="$c" 'BEGIN { printf "%.2fx", a / b }')
    awk -v a="$a" -v b="$c" 'BEGIN { exit !(a > b) }' && over+=("${label[$op]} ($ratio)")
    printf '| %-24s | %15.1f | %19.1f | %6s |\n' "${label[$op]}" "$a" "$c" "$ratio"
  else
    printf '| %-24s | %15s | %19.1f | %6s |\n' "${label[$op]}" "" "$c" ""
  fi
done
printf '| %-24s | %15s | %19s | %6s |\n' "peak RSS of app (VmHWM)" "$rss" "" ""
echo
echo "What each operation is (API: GET /api/repos/bench/registry/..., timed by curl; git: on the bare repository, wall clock):"
for op in "${ops[@]}"; do
  echo "  ${label[$op]}: ${api_path[$op]}"
  echo "    ${cli_text[$op]}"
done
echo "  (the file is $file_bytes bytes; the commit, \"$commit_subject\", has $commit_files files and adds $commit_lines lines;"
echo "   bench-a...bench-b has $compare_commits commits and $compare_files files adding $compare_lines lines; the archive is of the 10th commit)"
if [ "$with_api" = 1 ]; then
  echo
  if [ -n "$mismatches" ]; then
    echo "the API's answers differ from git's (checked on the untimed run):"
    echo "$mismatches"
  else
    echo "the API's answers match git's (commits, entries, bytes, files and line counts, blame per line, archive names, sizes and modes)"
  fi
  if [ ${#over[@]} -eq 0 ]; then
    echo "goal met: every API operation at most 1.00x the git CLI's time"
  else
    echo "goal (at most 1.00x the git CLI's time) missed by:"
    printf '  %s\n' "${over[@]}"
  fi
fi
