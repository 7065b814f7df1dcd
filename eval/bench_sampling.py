"""Acceptance under sampling, per drafter: how often the target's draws agree with the drafts.

Lossless sampling accepts a drafted child with the target's probability of it, so a drafter
whose guesses are the target's likely tokens is accepted more often than one that copies text.
Each drafter decodes the same requests (the held-out half of a bundled workload, as
bench_replay splits it) with the same seed, one engine per drafter on one model object.

    python -m lookahead.eval.bench_sampling --workloads gec rag --limit 4 --max-new-tokens 64
"""
from __future__ import annotations

import argparse

from lookahead.api import Lookahead
from lookahead.engine import EngineConfig
from lookahead.eval.bench_replay import half_of
from lookahead.eval.tables import markdown_table
from lookahead.models import load_model
from lookahead.samples import load_workload

DRAFTERS = ("prompt-lookup", "suffix", "recycling", "source", "auto")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", nargs="+", default=["gec", "rag"])
    ap.add_argument("--limit", type=int, default=4, help="held-out requests per workload")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--top-p", type=float, default=0.9)
    ap.add_argument("--dtype", default="auto")
    args = ap.parse_args(argv)
    loaded = load_model(None, dtype=args.dtype)
    rows = []
    for workload in args.workloads:
        cases = [c for c in load_workload(workload) if half_of(c["id"]) == "held-out"][: args.limit]
        task = "gec" if workload.startswith("gec") else "rag"
        prompts = [{"id": c["id"], "messages": c["messages"], **({"source": c["source"]} if c.get("source") else {})}
                   for c in cases]
        for name in DRAFTERS:
            if name == "source" and task != "gec":
                continue
            lm = Lookahead(loaded.model, loaded.tokenizer, drafter=name, task=task,
                           documents=[c["document"] for c in cases if c.get("document")],
                           config=EngineConfig(controller="fixed"))
            results = lm.generate(prompts, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                  top_p=args.top_p, seed=0)
            tokens = sum(r.output_tokens for r in results)
            forwards = sum(r.target_forwards for r in results)
            drafted, accepted = sum(r.drafted for r in results), sum(r.accepted for r in results)
            rows.append([workload, name, len(results), f"{tokens / max(1, forwards):.2f}",
                         f"{accepted / max(1, drafted):.3f}", f"{drafted / max(1, forwards - len(results)):.1f}"])
            print(" | ".join(map(str, rows[-1])), flush=True)
    print(f"\nT = {args.temperature}, top-p {args.top_p}, {args.max_new_tokens} new tokens, {loaded.dtype}, "
          f"fixed controller (32 nodes, depth 16)\n")
    print(markdown_table(["workload", "drafter", "requests", "τ", "accepted / drafted", "nodes / decode step"], rows))


if __name__ == "__main__":
    main()
