#!/usr/bin/env bash
# Runs every check and test: formatting, lints, docs, the test suites against real PostgreSQL,
# Redis and NATS (installed and started here, stopped at exit), and a smoke run of all six
# services. Needs no input; CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
started=$(date +%s)
step() { printf '\n== %s (%ss)\n' "$*" "$(( $(date +%s) - started ))"; }

step "installing what is missing"
scripts/services.sh install
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done

work=$(mktemp -d)
# Cleaning up never turns a finished run red: a straggler writing into $work is retried once.
cleanup() {
  scripts/services.sh stop "$work/services" || true
  rm -rf "$work" 2>/dev/null || { sleep 1; rm -rf "$work"; } || true
}
trap cleanup EXIT
# Everything the tests make in the temporary directory goes when the run ends.
mkdir -p "$work/tmp"
export TMPDIR="$work/tmp"

step "starting PostgreSQL, Redis and NATS"
scripts/services.sh start "$work/services"
# shellcheck disable=SC1091
. "$work/services/env.sh"

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo doc"
RUSTDOCFLAGS="-D warnings -D rustdoc::broken_intra_doc_links" \
  cargo doc --workspace --no-deps --locked --quiet

step "the public API against its snapshot in public-api/"
scripts/public-api.sh --check --no-doc

step "platform-git in each documented feature set"
scripts/features.sh

step "cargo package (each library crate builds from its published form)"
scripts/package.sh

step "doc tests"
cargo test --workspace --locked --doc 2>&1 | tee "$work/doc-tests.log"

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast 2>&1 | tee "$work/tests.log"
else
  cargo test --workspace --locked --no-fail-fast --all-targets 2>&1 | tee "$work/tests.log"
fi

step "the API against its OpenAPI document (schemathesis)"
scripts/api-check.sh 2>&1 | tee "$work/api-check.log"

step "all six services, started the way scripts/run.sh starts them"
# The aggregator's merged exposition of that run: what the dashboards and alerts may query.
export PLATFORM_METRICS_DUMP="$work/metrics.txt"
scripts/run.sh --smoke

step "the Helm chart"
scripts/chart.sh 2>&1 | tee "$work/chart.log"

# Failures stop the script above, so reaching here means every test passed.
passed=$(
  {
    cat "$work/doc-tests.log" "$work/tests.log" \
      | grep -oE '(test result: ok\. [0-9]+ passed|tests run: [0-9]+ passed)' | grep -oE '[0-9]+'
    grep -oE '^Ran [0-9]+ tests?' "$work/chart.log" | grep -oE '[0-9]+'
  } | awk '{ sum += $1 } END { print sum + 0 }'
)
step "done"
echo "tests: $passed passed, 0 failed"
