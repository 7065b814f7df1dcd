#!/usr/bin/env bash
# Command 1 of the README: install, then run `lookahead run` on the bundled grammar-correction sample.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh ""
exec .venv/bin/lookahead run --workload gec --limit 3 --max-new-tokens 96 "$@"
