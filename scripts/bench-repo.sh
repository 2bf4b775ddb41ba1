# shellcheck shell=bash
# Sourced by scripts/bench-git.sh and scripts/bench-browse.sh: the benchmark repository, built
# from the Rust crate sources in cargo's registry (the largest registry source directory), one
# commit per crate in the order of their directory names, each adding crates/<name-version>.
#
#   build_registry_repo DIR   a new non-bare repository at DIR on branch main; sets
#                             registry_commits to the number of commits (one per crate)
build_registry_repo() {
  local dir=$1 registry crate name
  git init --quiet --initial-branch=main "$dir"
  registry=$(du -s "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/ | sort -n | tail -1 | cut -f2)
  registry_commits=0
  mkdir -p "$dir/crates"
  for crate in "$registry"*/; do
    name=$(basename "$crate")
    cp -r "$crate" "$dir/crates/$name"
    git -C "$dir" add --all crates >/dev/null
    # No automatic gc while building: it would race the caller's `git gc`.
    git -C "$dir" -c gc.auto=0 -c user.name=bench -c user.email=bench@example.com commit --quiet -m "add $name"
    registry_commits=$((registry_commits + 1))
  done
}
