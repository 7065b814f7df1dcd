"""Add the target's likeliest tokens at each output position to a trace that lacks them (`successors`).

`lookahead run --trace-output` records them as the engine computes them. For a trace recorded
without them, one teacher-forced forward of prompt + output gives the logits at every output
position at once (fp32): the same top-k ids as step by step, except where near-ties reorder them,
so replay τ with successor drafters on such a trace is close to, not bit-equal with, a run's.

    python -m lookahead.eval.trace_successors eval/traces/gec-smollm2-128.jsonl --k 8
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from lookahead.models import load_model


def successors(model, prompt_ids: list[int], output_ids: list[int], k: int) -> list[list[int]]:
    """[O][k]: the top-k ids of the logits that chose each output token (teacher forced)."""
    ids = torch.tensor([prompt_ids + output_ids[:-1]])
    with torch.inference_mode():
        logits = model(input_ids=ids, logits_to_keep=len(output_ids)).logits[0]
    return logits.topk(k, dim=-1).indices.tolist()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("traces", nargs="+")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--model", default=None, help="the model that made the trace [default: bundled SmolLM2]")
    args = ap.parse_args(argv)
    lm = load_model(args.model, dtype="float32")
    lm.model.set_attn_implementation("sdpa")
    for path in map(Path, args.traces):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for row in rows:
            if row["output_ids"] and not row.get("successors"):
                row["successors"] = successors(lm.model, row["prompt_ids"], row["output_ids"], args.k)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"{path}: {len(rows)} records with successors (k={args.k})")


if __name__ == "__main__":
    main()
