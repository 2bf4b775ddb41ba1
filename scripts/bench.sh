#!/usr/bin/env bash
# Runs a benchmark against real services started for it, and prints its table.
#   scripts/bench.sh queue     the job queue against raw NATS JetStream and raw Redis Streams
#   scripts/bench.sh git       gitserver against git http-backend behind nginx + fcgiwrap
#   scripts/bench.sh browse    app's repository browsing API against the git CLI
#   scripts/bench.sh static    static_server against nginx, with wrk
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: scripts/bench.sh queue|git|browse|static}
if [ "$name" = static ]; then exec scripts/bench-static.sh; fi
scripts/services.sh install
work=$(mktemp -d)
trap 'scripts/services.sh stop "$work/services"; rm -rf "$work"' EXIT
scripts/services.sh start "$work/services"
# shellcheck disable=SC1091
. "$work/services/env.sh"
case $name in
  queue) cargo bench --locked -p platform-core --bench queue ;;
  git) scripts/bench-git.sh ;;
  browse) scripts/bench-browse.sh ;;
  *) echo "usage: scripts/bench.sh queue|git|browse|static" >&2; exit 2 ;;
esac
