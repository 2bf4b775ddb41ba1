#!/usr/bin/env bash
# Checks that each library crate builds from its published form: packs the five crates with
# `cargo package` (what `cargo publish` would upload, with the manifest cargo rewrites), unpacks
# them into one workspace of their own, and type-checks every library there, so a source file,
# include or feature left out of a package fails here rather than for the first user.
#
# Why not `cargo package`'s own verification: it compiles each package in a workspace of its own,
# where feature unification differs from ours, so nothing of the workspace's build is reused and
# the model and vector-store stack (candle, gemm, qdrant-edge, tree-sitter) is compiled to machine
# code once more: more than a third of CI's time. `cargo check` in one workspace of the packages,
# under this repository's profile, shares the dependency metadata clippy has already built and
# proves the same thing about the packages' contents.
set -euo pipefail
cd "$(dirname "$0")/.."
crates=(platform-core platform-storage platform-git platform-mail platform-ai)

packages=()
for crate in "${crates[@]}"; do packages+=(-p "$crate"); done
cargo package --locked --allow-dirty --no-verify --quiet "${packages[@]}"

# Under target/ so that cargo finds this repository's .cargo/config.toml (the profile) and the
# unpacked workspace shares target/ with the real one.
unpacked=target/package-check
rm -rf "$unpacked"
mkdir -p "$unpacked"
metadata=$(cargo metadata --no-deps --format-version 1 --locked)
members=() patches=()
for crate in "${crates[@]}"; do
  version=$(python3 -c 'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == sys.argv[1]))' "$crate" <<<"$metadata")
  # Unpacked with the time of now (-m): cargo tells fresh from stale by modification times, and
  # the packages keep their files' own, which can be older than the last check of this place.
  tar -xzmf "target/package/$crate-$version.crate" -C "$unpacked"
  members+=("\"$crate-$version\"")
  # The packaged manifests name each other by version, as crates.io would serve them.
  patches+=("$crate = { path = \"$crate-$version\" }")
done
{
  echo '[workspace]'
  echo 'resolver = "3"'
  echo "members = [$(IFS=,; echo "${members[*]}")]"
  echo
  echo '[patch.crates-io]'
  printf '%s\n' "${patches[@]}"
} >"$unpacked/Cargo.toml"
# The same dependency versions as the workspace; cargo drops what the packages do not use.
cp Cargo.lock "$unpacked/Cargo.lock"

CARGO_TARGET_DIR="$PWD/target" cargo check --manifest-path "$unpacked/Cargo.toml" \
  --workspace --lib --offline --quiet
echo "package.sh: ${crates[*]} check from their packages"
