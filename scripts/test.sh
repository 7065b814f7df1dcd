#!/usr/bin/env bash
# Command 2 of the README (and CI): install with the test, data and ray extras, then run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh "[test,data,ray]"
# pytest from the venv's bin (not `python -m pytest`): the repo root must not land on sys.path,
# where our kernels/ folder would stand in for Hugging Face's `kernels` package.
exec .venv/bin/pytest -q "$@"
