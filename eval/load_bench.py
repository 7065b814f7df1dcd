"""Load benchmark on the real engine: Poisson arrivals at several rates, per controller.

For each workload the plain-decoding capacity C (requests/s) is measured first:
every request submitted at once, controller off. Then, for each load factor f
(default 0.1 0.3 0.6 1.0 1.5), requests arrive as a seeded Poisson process of
rate f·C (the same arrival times for every controller) and are added to the engine
between steps as their time passes; latency counts from the arrival. Controllers:
goodput, fixed-N (the whole tree of N nodes per request) and off. Each controller
keeps one engine across all rates, like a server that stays up (its cost model and
drafter calibration keep learning), warmed by one short request. Report columns are
defined in load_report.py. The drafter is `auto` without a retrieval datastore,
as the replay simulator uses it (simulator.py: cycled traces would let retrieval
of past outputs find the very output).

Idle time is skipped, not slept: when nothing runs, the clock jumps to the next
arrival. Busy time is real, so a run costs its busy time only.

  python -m lookahead.eval.load_bench --workloads gec rag --limit 6 --max-new-tokens 64   # CPU, SmolLM2

On a GPU, a randomly initialised 8B-shaped Llama with the acceptance of SmolLM2's
recorded traces (RecordedTarget with random_llama.py: real forward cost, recorded greedy choices):

  python -m lookahead.eval.load_bench --random-llama-8b --device cuda --dtype bfloat16 \\
      --traces eval/results/traces/gec.jsonl eval/results/traces/rag.jsonl --limit 32 --max-batch-size 32 \\
      --max-new-tokens 128 --name load-h100-llama8b
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np

from lookahead.drafters.mixer import make_drafter
from lookahead.engine import Engine, EngineConfig, SamplingParams
from lookahead.engine.recorded_target import RecordedTarget

from .load_report import RequestTiming, markdown, plot, summarize, with_ratios, write_json
from .load_requests import LoadRequest, bundled_tokenizer, from_trace, from_workload, poisson_arrivals

CONTROLLERS = ("goodput", "fixed-8", "fixed-32", "off")
LOADS = (0.1, 0.3, 0.6, 1.0, 1.5)


class SkipClock:
    """time.perf_counter, plus the idle time skipped so far (the engine's injectable clock)."""

    def __init__(self):
        self.skipped = 0.0

    def __call__(self) -> float:
        return time.perf_counter() + self.skipped

    def skip_to(self, t: float) -> None:
        self.skipped += max(0.0, t - self())


def engine_config(controller: str, max_nodes: int, max_depth: int, max_batch_size: int,
                  requests: list[LoadRequest], max_new_tokens: int) -> EngineConfig:
    """fixed-N verifies N nodes per request; goodput chooses within `max_nodes`; off decodes plainly."""
    mode, _, n = controller.partition("-")
    nodes = int(n) if mode == "fixed" else max_nodes
    longest = max(len(r.prompt_ids) for r in requests) + max_new_tokens + max_depth + 1
    # Sized to the batch, not the default 32k tokens: four engines live side by side.
    return EngineConfig(max_nodes=nodes, max_depth=max_depth, controller=mode, max_batch_size=max_batch_size,
                        kv_cache_tokens=max_batch_size * (longest + 16))


def drive(engine: Engine, clock: SkipClock, requests: list[LoadRequest], arrivals, params: SamplingParams):
    """Serve `requests` arriving at `arrivals` (seconds from now); their timings and the busy seconds."""
    t0 = clock()
    pending = deque(zip(np.asarray(arrivals).tolist(), requests))
    added, busy = [], 0.0
    while pending or engine.has_work():
        while pending and pending[0][0] <= clock() - t0:
            at, r = pending.popleft()
            req = engine.add(r.id, r.prompt_ids, params, source_ids=r.source_ids)
            req.arrived = t0 + at  # it arrived during the step that just ended, not at its end
            added.append(req)
        if not engine.has_work():
            clock.skip_to(t0 + pending[0][0])
            continue
        start = clock()
        engine.step()
        busy += clock() - start
    failed = [r for r in added if r.error]
    if failed:
        raise RuntimeError(f"request {failed[0].id} failed: {failed[0].error}")
    return [RequestTiming(r.arrived - t0, r.finished_at - t0, len(r.output_ids), r.forwards, r.drafted)
            for r in added], busy


class Target:
    """Makes one engine per controller over one model: SmolLM2 (or --model), or a replayed random Llama."""

    def __init__(self, args, model, tokenizer, name: str, eos: list[int] | None):
        self.args, self.model, self.tokenizer, self.name, self.eos = args, model, tokenizer, name, eos
        self.device = str(next(model.parameters()).device)

    @classmethod
    def load(cls, args) -> "Target":
        if args.random_llama_8b:
            from .random_llama import random_llama

            return cls(args, random_llama(args.random_llama_8b, args.device, args.dtype), None,
                       f"random Llama ({args.random_llama_8b}) replaying SmolLM2 traces",
                       [bundled_tokenizer().eos_token_id])
        from lookahead.models import load_model

        lm = load_model(args.model, dtype=args.dtype, device=args.device)
        return cls(args, lm.model, lm.tokenizer, lm.name, None)

    def workloads(self) -> dict[str, list[LoadRequest]]:
        if self.args.random_llama_8b:
            tok = bundled_tokenizer()
            out = {}
            for path in self.args.traces:
                workload = Path(path).stem.split("-")[0]  # gec.jsonl, rag-smollm2-128.jsonl, ...
                out[workload] = from_trace(path, workload, tok)[: self.args.limit]
            return out
        return {w: from_workload(w, self.tokenizer, self.args.limit) for w in self.args.workloads}

    def engine(self, controller: str, workload: str, requests: list[LoadRequest], clock: SkipClock) -> Engine:
        a = self.args
        config = engine_config(controller, a.max_nodes, a.max_depth, a.max_batch_size, requests, a.max_new_tokens)
        drafter = None if controller == "off" else make_drafter(a.drafter, task=workload)
        model = self.model
        if a.random_llama_8b:  # the random model's cost, the recorded model's choices
            model = RecordedTarget({r.id: r.prompt_ids + r.output_ids for r in requests}, self.eos[0], model=model)
        return Engine(model, self.tokenizer, drafter, config, eos_token_ids=self.eos, clock=clock)


def bench_workload(target: Target, workload: str, requests: list[LoadRequest], args) -> tuple[list, dict]:
    clock = SkipClock()
    params = SamplingParams(max_new_tokens=args.max_new_tokens)
    engines = {c: target.engine(c, workload, requests, clock) for c in dict.fromkeys([*args.controllers, "off"])}
    for engine in engines.values():  # first forwards, numba compiles, first calibration
        drive(engine, clock, requests[:1], [0.0], SamplingParams(max_new_tokens=8))
    saturated, _ = drive(engines["off"], clock, requests, np.zeros(len(requests)), params)
    capacity = len(requests) / max(t.finish for t in saturated)
    print(f"{workload}: plain-decoding capacity {capacity:.3f} requests/s", flush=True)
    rows, steps = [], {}
    for i, load in enumerate(args.rates):
        arrivals = poisson_arrivals(len(requests), load * capacity, seed=args.seed + i)
        for c in args.controllers:
            engine = engines[c]
            first = len(engine.step_log)
            timings, busy = drive(engine, clock, requests, arrivals, params)
            rows.append(summarize(workload, c, load, load * capacity, timings, busy))
            steps[f"{workload}/{c}/{load}"] = [[s.requests, s.query_tokens, s.kv_tokens, s.draft_nodes, s.seconds]
                                               for s in engine.step_log[first:]]
            # Progress, on stderr: the report on stdout is the table at the end, whose ratios need every row.
            print(markdown(rows).splitlines()[-1], file=sys.stderr, flush=True)
    return rows, {"capacity": capacity, "steps": steps}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", nargs="+", default=["gec", "rag"])
    ap.add_argument("--limit", type=int, default=6, help="requests per rate")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--rates", nargs="+", type=float, default=list(LOADS),
                    help="arrival rates as multiples of the measured plain-decoding capacity")
    ap.add_argument("--controllers", nargs="+", default=list(CONTROLLERS), help="goodput, fixed-N, off")
    ap.add_argument("--drafter", default="auto")
    ap.add_argument("--max-nodes", type=int, default=32, help="goodput's largest tree per request")
    ap.add_argument("--max-depth", type=int, default=16)
    ap.add_argument("--max-batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=None)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--random-llama-8b", nargs="?", const="8b", default=None, metavar="SHAPE",
                    help="a random Llama (8b, or tiny for a smoke run) replaying --traces")
    ap.add_argument("--traces", nargs="+", default=[], help="trace JSONL files (with --random-llama-8b)")
    ap.add_argument("--out-dir", default="eval/results")
    ap.add_argument("--name", default="load-cpu-smollm2", help="file name stem of the JSON and PNG")
    return ap


def main(argv=None) -> None:
    ap = parser()
    args = ap.parse_args(argv)
    if args.random_llama_8b and not args.traces:
        ap.error("--random-llama-8b needs --traces")
    import torch

    target = Target.load(args)
    rows, extra = [], {}
    for workload, requests in target.workloads().items():
        r, extra[workload] = bench_workload(target, workload, requests, args)
        rows += r
    rows = with_ratios(rows)
    where = (f"{target.name} · {target.device} {args.dtype} · {platform.node()} · torch {torch.get_num_threads()} "
             f"threads · {args.limit} requests/rate · {args.max_new_tokens} new tokens")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{args.name}.json", rows, where=where, args=vars(args), runs=extra)
    plot(rows, out / f"{args.name}.png", where.split(" · ")[0] + f" · {target.device}")
    print(f"\n{where}\n\n{markdown(rows)}\n\nwrote {out / args.name}.json and .png")


if __name__ == "__main__":
    main()
