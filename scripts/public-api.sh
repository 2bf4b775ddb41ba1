#!/usr/bin/env bash
# Keeps a snapshot of each library crate's public API in public-api/<crate>.txt, so that any change
# to it shows in review: every public item with its path, kind and signature as rustdoc renders it
# (scripts/public-api.py reads the HTML of `cargo doc --no-deps`, on the stable toolchain).
#
#   scripts/public-api.sh [--check|--update] [--no-doc] [CRATE...]
#
#   --check   (the default) fails with a unified diff when the API differs from the snapshot
#   --update  rewrites the snapshot
#   --no-doc  uses the documentation already in target/doc instead of running
#             `cargo doc --workspace --no-deps --locked --quiet` first (so does PUBLIC_API_NO_DOC=1)
#   CRATE     only these packages (the default is all five library crates); cargo doc then
#             documents only them
#
# Signatures are rustdoc's rendering: a new toolchain can change some without any change to the
# API, and then --update after the toolchain update is the whole fix.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=check
build=${PUBLIC_API_NO_DOC:+no}
build=${build:-yes}
crates=()
for arg in "$@"; do
  case $arg in
    --check) mode=check ;;
    --update) mode=update ;;
    --no-doc) build=no ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    -*) echo "public-api.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
    *) crates+=("$arg") ;;
  esac
done
if [ ${#crates[@]} -eq 0 ]; then
  crates=(platform-core platform-storage platform-git platform-mail platform-ai)
  packages=(--workspace)
else
  packages=()
  for crate in "${crates[@]}"; do packages+=(-p "$crate"); done
fi

if [ "$build" = yes ]; then
  cargo doc "${packages[@]}" --no-deps --locked --quiet
fi

target_dir=$(cargo metadata --format-version 1 --no-deps --locked --offline \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
doc_dir=$target_dir/doc

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 scripts/public-api.py --doc-dir "$doc_dir" --out-dir "$work" "${crates[@]}"

if [ "$mode" = update ]; then
  mkdir -p public-api
  for crate in "${crates[@]}"; do
    if ! cmp -s "$work/$crate.txt" "public-api/$crate.txt"; then
      cp "$work/$crate.txt" "public-api/$crate.txt"
      echo "public-api/$crate.txt: updated ($(wc -l <"public-api/$crate.txt") items)"
    fi
  done
  exit 0
fi

failed=0
for crate in "${crates[@]}"; do
  snapshot=public-api/$crate.txt
  [ -f "$snapshot" ] || snapshot=/dev/null
  if ! diff -u --label "a/public-api/$crate.txt" --label "b/public-api/$crate.txt" \
    "$snapshot" "$work/$crate.txt"; then
    failed=1
  fi
done
if [ "$failed" -ne 0 ]; then
  version=$(grep -o 'data-rustdoc-version="[^"]*"' "$doc_dir/${crates[0]//-/_}/index.html" \
    | head -n 1 | cut -d'"' -f2 || true)
  {
    echo
    echo "public-api: the public API differs from the snapshot in public-api/ (above, as rendered"
    echo "by rustdoc ${version:-of unknown version}): if the change is meant, run"
    echo "scripts/public-api.sh --update and commit the change"
  } >&2
  exit 1
fi
echo "public-api: ${#crates[@]} crates match public-api/"
