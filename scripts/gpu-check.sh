#!/usr/bin/env bash
# The GPU check, in one command, within 8 minutes on one H100/H200 with the image's own torch,
# transformers, triton, numba and typer, no network, and beside the working tree the two carried folders
# of scripts/gpu-prepare.sh (.model-split/a|b: the bundled model in parts; .whl: missing wheels):
#   1. install the project (--no-deps) and the carried wheels; reassemble and check the model
#   2. the GPU-marked tests
#   3. the tree-attention kernel against SDPA, a reduced grid
#   4. end to end in bf16 on the bundled samples: Hugging Face greedy, prompt lookup and static cache
#      (compiled by transformers on a GPU), our plain decoding and auto/goodput
# Tables and JSON go to $OUT (default eval/results/gpu-check-<date>/), with index.md naming the machine,
# each stage's command, exit code and time. A failed stage does not stop the later ones; the exit code
# is the number of failed stages.
#   bash scripts/gpu-check.sh            # on the GPU machine
#   bash scripts/gpu-check.sh --dry-run  # on a CPU (CI): the same stages at toy sizes, from .venv
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0; [ "${1:-}" = "--dry-run" ] && DRY=1
OUT=${OUT:-eval/results/gpu-check-$(date +%F)}
mkdir -p "$OUT"
failed=0
index="$OUT/index.md"
stage() {  # stage NAME SECONDS CMD...: run, time and record one stage
  local name=$1 limit=$2; shift 2
  local start=$SECONDS rc=0
  echo "== $name: $*" >&2
  timeout "$limit" "$@" > "$OUT/$name.md" 2> "$OUT/$name.log" || rc=$?
  [ "$rc" -eq 0 ] || failed=$((failed + 1))
  printf '## %s\n\n`%s` (exit %s, %s s)\n\n' "$name" "$*" "$rc" "$((SECONDS - start))" >> "$index"
  cat "$OUT/$name.md" >> "$index"; echo >> "$index"
}

if [ "$DRY" -eq 1 ]; then
  PY=${PY:-.venv/bin/python}
  MODEL=${MODEL:-smollm2}
  KERNEL=(--interpret --tiny)
  E2E=(--limit 1 --max-new-tokens 8 --dtype float32)
else
  PY=${PY:-python3}
  SITE=$HOME/lookahead-site
  "$PY" -m pip install -q --no-index --no-deps --target "$SITE" .whl/*.whl || failed=$((failed + 1))
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
  "$PY" -m pip install -q --no-index --no-deps --no-build-isolation . || failed=$((failed + 1))
  MODEL=$HOME/lookahead-model.gguf
  cat .model-split/a/part_0 .model-split/b/part_1 > "$MODEL"
  echo "$(cat .model-split/b/sha256)  $MODEL" | sha256sum -c --quiet || failed=$((failed + 1))
  KERNEL=(--batch 1 8 32 --tree 1 16 64 --context 1024 4096)
  E2E=(--limit 4 --max-new-tokens 128 --dtype bfloat16)
fi
# -P: the working directory stays off sys.path (its kernels/ folder would stand in for a `kernels` package)
{
  echo "# GPU check$([ "$DRY" -eq 1 ] && echo ' (dry run on the CPU)'), $(date -u +%FT%TZ)"; echo
  echo "Machine: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo 'no GPU'), \
$(nproc) CPUs; $("$PY" -P -c 'import torch, transformers, triton; print("torch", torch.__version__, "· transformers", transformers.__version__, "· triton", triton.__version__)')."
  echo
} > "$index"
stage gpu-tests 240 "$PY" -P -m pytest -q -m gpu -p no:cacheprovider tests/
stage kernel 150 "$PY" -P -m lookahead.eval.bench_kernel "${KERNEL[@]}" --json "$OUT/kernel.json"
stage e2e 300 "$PY" -P -m lookahead.eval.bench_e2e --workloads gec rag "${E2E[@]}" --model "$MODEL" --no-llama-cpp \
  --systems plain auto/goodput hf-compiled --json "$OUT/e2e.json"
echo "wrote $index ($failed failed)" >&2
exit "$failed"
