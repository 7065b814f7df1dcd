#!/usr/bin/env bash
# Prepares, on a machine with network, what a GPU machine without network needs beside the project's
# working tree (scripts/gpu-check.sh on it): the bundled SmolLM2 GGUF (98 MB) in two parts of under
# 64 MiB each with its sha256 (.model-split/a, .model-split/b), and the wheels its preinstalled stack
# (torch, transformers, triton, numba, typer) lacks, for Python 3.12 (.whl/). Both folders are git-ignored.
#   bash scripts/gpu-prepare.sh        # after scripts/setup-venv.sh (or scripts/test.sh) made .venv
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
gguf=$("$PY" -c "from lookahead.models import bundled_gguf; print(bundled_gguf())")
rm -rf .model-split .whl && mkdir -p .model-split/a .model-split/b .whl
split -n 2 -d "$gguf" .model-split/part_
mv .model-split/part_00 .model-split/a/part_0
mv .model-split/part_01 .model-split/b/part_1
sha256sum "$gguf" | cut -d' ' -f1 > .model-split/b/sha256
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl gguf pyahocorasick hypothesis sortedcontainers attrs pytest pluggy iniconfig
du -sh .model-split/a .model-split/b .whl
echo "carry .model-split/a in one call, .model-split/b and .whl in the next; then: bash scripts/gpu-check.sh"
