"""End to end, side by side in one process: Hugging Face greedy and prompt lookup against our engine.

Every system decodes the same requests one at a time (Hugging Face prompt lookup
refuses batches), greedy, on the same model object:

  hf-greedy   model.generate(do_sample=False)
  hf-pld      model.generate(prompt_lookup_num_tokens=10)   (τ from counted forwards)
  plain       our engine, no drafter
  <drafter>   our engine with that drafter and controller (e.g. auto/goodput, prompt-lookup/fixed)

Reports τ (output tokens per target forward), tokens/s, speedup over hf-greedy and over
our plain decoding, and the fraction of outputs identical to our plain greedy output.

  python -m lookahead.eval.bench_e2e --workloads gec rag --limit 8 --max-new-tokens 128
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict, dataclass

import torch

from lookahead.drafters.mixer import make_drafter
from lookahead.engine import Engine, EngineConfig, SamplingParams
from lookahead.eval.workloads import load_workload
from lookahead.models import load_model
from lookahead.requests_io import RequestSpec, encode_prompt


@dataclass
class Row:
    workload: str
    system: str
    requests: int
    output_tokens: int
    forwards: int
    seconds: float
    identical: int  # outputs equal to our plain greedy output
    tau: float = 0.0
    tokens_per_s: float = 0.0
    speedup_vs_hf: float = 0.0
    speedup_vs_plain: float = 0.0


class ForwardCounter:
    """Counts target forwards of `generate` (prompt lookup verifies a whole chain per call)."""

    def __init__(self, model):
        self.calls = 0
        self.handle = model.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        self.calls += 1


def hf_generate(model, ids: list[int], n: int, pld: bool) -> tuple[list[int], int]:
    x = torch.tensor([ids], device=model.device)
    counter = ForwardCounter(model)
    try:
        extra = {"prompt_lookup_num_tokens": 10} if pld else {}
        out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False, **extra)
    finally:
        counter.handle.remove()
    return out[0, len(ids):].tolist(), counter.calls


def run_engine(model, tokenizer, prompts, n, drafter_name, controller, max_nodes, max_depth):
    drafter = None if drafter_name == "none" else make_drafter(drafter_name, task=None)
    config = EngineConfig(max_nodes=max_nodes, max_depth=max_depth, max_batch_size=1, controller=controller,
                          kv_cache_tokens=max(len(p) for p in prompts.values()) + n + max_depth + 64)
    outputs, forwards = {}, 0
    for rid, ids in prompts.items():  # one at a time, like the Hugging Face rows
        engine = Engine(model, tokenizer, drafter, config)
        req = engine.run({rid: ids}, SamplingParams(max_new_tokens=n))[rid]
        outputs[rid], forwards = req.output_ids, forwards + req.forwards
    return outputs, forwards


def bench_workload(lm, workload, limit, n, systems, max_nodes, max_depth) -> list[Row]:
    model, tok = lm.model, lm.tokenizer
    cases = load_workload(workload, limit=limit)
    prompts = {c["id"]: encode_prompt(tok, RequestSpec(c["id"], messages=c["messages"])) for c in cases}
    results: dict[str, tuple[dict, int, float]] = {}
    run_engine(model, tok, dict(list(prompts.items())[:1]), 4, "none", "off", max_nodes, max_depth)  # warm-up
    for system in ["plain", "hf-greedy", "hf-pld", *systems]:
        start = time.perf_counter()
        if system.startswith("hf-"):
            model.set_attn_implementation("sdpa")
            try:
                outs = {rid: hf_generate(model, ids, n, system == "hf-pld") for rid, ids in prompts.items()}
            finally:
                model.set_attn_implementation("lookahead")
            outputs, forwards = {rid: o for rid, (o, _) in outs.items()}, sum(f for _, f in outs.values())
        elif system == "plain":
            outputs, forwards = run_engine(model, tok, prompts, n, "none", "off", max_nodes, max_depth)
        else:
            drafter, controller = system.split("/")
            outputs, forwards = run_engine(model, tok, prompts, n, drafter, controller, max_nodes, max_depth)
        results[system] = (outputs, forwards, time.perf_counter() - start)
    plain_out = results["plain"][0]
    rows = []
    for system, (outputs, forwards, seconds) in results.items():
        tokens = sum(len(o) for o in outputs.values())
        rows.append(Row(workload, system, len(outputs), tokens, forwards, seconds,
                        sum(outputs[r] == plain_out[r] for r in outputs),
                        tau=tokens / max(1, forwards), tokens_per_s=tokens / seconds))
    by = {r.system: r for r in rows}
    for r in rows:
        r.speedup_vs_hf = r.tokens_per_s / by["hf-greedy"].tokens_per_s
        r.speedup_vs_plain = r.tokens_per_s / by["plain"].tokens_per_s
    return rows


def markdown(rows: list[Row]) -> str:
    head = ("| workload | system | requests | output tokens | τ | tokens/s | × HF greedy | × our plain "
            "| identical to greedy |\n|---|---|---|---|---|---|---|---|---|")
    body = [f"| {r.workload} | {r.system} | {r.requests} | {r.output_tokens} | {r.tau:.2f} | {r.tokens_per_s:.1f} "
            f"| {r.speedup_vs_hf:.2f} | {r.speedup_vs_plain:.2f} | {r.identical}/{r.requests} |" for r in rows]
    return "\n".join([head, *body])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", nargs="+", default=["gec", "rag"])
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--systems", nargs="+", default=["prompt-lookup/fixed", "auto/fixed", "auto/goodput"],
                    help="DRAFTER/CONTROLLER pairs of our engine")
    ap.add_argument("--max-nodes", type=int, default=32)
    ap.add_argument("--max-depth", type=int, default=16)
    ap.add_argument("--model", default=None)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", dest="json_out", default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    lm = load_model(args.model, dtype=args.dtype, device=args.device)
    rows = []
    for w in args.workloads:
        rows += bench_workload(lm, w, args.limit, args.max_new_tokens, args.systems, args.max_nodes, args.max_depth)
        print(markdown([r for r in rows if r.workload == w]), flush=True)
    where = f"{platform.node()} · {lm.device} {args.dtype} · torch {torch.get_num_threads()} threads"
    print(f"\n{lm.name}, {args.max_new_tokens} new tokens, {where}\n\n{markdown(rows)}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"where": where, "args": vars(args), "rows": [asdict(r) for r in rows]}, f, indent=1)


if __name__ == "__main__":
    main()
