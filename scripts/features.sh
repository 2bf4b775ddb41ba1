#!/usr/bin/env bash
# Builds platform-git with each feature set its README documents (lints as errors), and checks
# that the small ones stay small: `http` alone compiles neither diesel nor russh, and the
# embedding example pulls in no database, Redis or NATS client.
set -euo pipefail
cd "$(dirname "$0")/.."

feature_sets=("" "http" "ssh" "local" "browse" "http,ssh,local" "postgres" "api")
for features in "${feature_sets[@]}"; do
  echo "platform-git --no-default-features --features '${features}'"
  cargo clippy --quiet --locked -p platform-git --no-default-features --features "$features" \
    -- -D warnings
done

# Names of the crates a package compiles (not its dev-dependencies), one per line.
crates_of() { cargo tree --locked -e normal,build --prefix none --format '{p}' "$@" | awk '{ print $1 }' | sort -u; }

refuse() {
  local what=$1 pattern=$2; shift 2
  local found
  found=$(crates_of "$@" | grep -E "$pattern" || true)
  if [[ -n $found ]]; then
    echo "$what pulls in what it must not:" >&2
    echo "$found" >&2
    exit 1
  fi
  echo "$what: $(crates_of "$@" | wc -l) crates, none of them matching $pattern"
}
refuse "platform-git with only http" '^(diesel|diesel-async|russh|redis|async-nats|platform-core)$' \
  -p platform-git --no-default-features --features http
refuse "example-embed-git-server" '^(diesel|diesel-async|redis|bb8-redis|async-nats|platform-core)$' \
  -p example-embed-git-server
