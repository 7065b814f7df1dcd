"""Load behaviour of a model or GPU we do not run: replayed traces, a step cost curve, a simulated clock.

The replay (replay.py) says what a drafter's trees would accept against recorded
greedy outputs; a cost curve (StepCostModel coefficients) says how long each step
would take. Together, under Poisson arrivals and continuous batching, they predict
the latency and goodput of the load benchmark (load_bench.py) for a larger model or
another GPU. Each step mirrors Engine.step: admission of waiting requests up to the
batch size, propose (the real drafters, pruned to the budget), prune by the real
GoodputController, a verify whose seconds are the cost curve's for the step's
requests, query tokens and KV tokens, acceptance by matching the recorded output,
update. The controller learns its cost model from the simulated steps as the engine
does from measured ones (from the same prior), unless `learn=False` gives it the
true curve. Requests cycle through the trace records (unique ids) to make long
arrival streams; the drafter is `auto` without a retrieval datastore, since a
datastore of past outputs would find a cycled request's very output.

Costs come from the H100 measurement of an 8B-shaped model (bf16, HF eager, context 1024), for an 8B-shaped model (`--cost h100-8b`)
or are fitted from the step log of a real load run (`--fit-from load.json`).

Example: a 3-token output replayed by a chain drafter that always guesses right
finishes in 2 steps (prefill, then one verify of 2 nodes); at a flat 10 ms/step
its latency is 20 ms, against 30 ms with plain decoding.

>>> from lookahead.cost_model import CostCoefficients
>>> from lookahead.eval.load_requests import LoadRequest
>>> reqs = [LoadRequest("r", [1, 2, 3], output_ids=[1, 2, 3])]
>>> flat = CostCoefficients(base=0.010, past_knee=0.0)
>>> [round(simulate(reqs, [0.0], flat, c, SimConfig(drafter="prompt-lookup"))[0][0].finish, 3)
...  for c in ("fixed-8", "off")]
[0.02, 0.03]

  python -m lookahead.eval.simulator --traces eval/results/traces/gec.jsonl eval/results/traces/rag.jsonl \\
      --cost h100-8b --requests 200 --max-batch-size 32 --name sim-h100-llama8b
"""
from __future__ import annotations

import argparse
import json
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lookahead.controller import GoodputController
from lookahead.cost_model import CostCoefficients, StepCostModel
from lookahead.drafters import DraftTree, TreeBudget
from lookahead.drafters.mixer import make_drafter

from .load_report import RequestTiming, markdown, plot, summarize, with_ratios, write_json
from .load_requests import LoadRequest, bundled_tokenizer, from_trace, poisson_arrivals
from .replay import ReplayConfig, ReplayReport, TraceRecord, _advance, _propose, _State

# Measured on an H100, an 8B-shaped model (bf16, HF eager, context 1024): ~40 ms per forward up to
# the knee, 104 ms for 2048 query tokens at batch 32 (the cost model's default prior).
H100_8B = CostCoefficients()


@dataclass
class SimConfig:
    """The engine settings the simulation honours (EngineConfig's names) and the drafter."""

    max_nodes: int = 32  # goodput's largest tree per request (fixed-N uses N)
    max_depth: int = 16
    max_batch_size: int = 8
    prefill_chunk: int = 1024
    max_new_tokens: int | None = None  # None = each recorded output in full
    drafter: str = "auto"
    task: str | None = None  # "gec" adds the source-aligned drafter to auto
    learn: bool = True  # the controller fits its cost model online (False: it knows the true curve)


def simulate(requests: list[LoadRequest], arrivals, cost: CostCoefficients, controller: str,
             config: SimConfig | None = None) -> tuple[list[RequestTiming], float]:
    """Serve trace `requests` arriving at `arrivals` (seconds); their timings and the busy seconds."""
    config = config or SimConfig()
    mode, _, n = controller.partition("-")
    nodes = int(n) if mode == "fixed" else config.max_nodes
    rcfg = ReplayConfig(max_nodes=nodes, max_depth=config.max_depth, prefill_chunk=config.prefill_chunk)
    drafter = None if mode == "off" else make_drafter(config.drafter, task=config.task)
    budget = TreeBudget(nodes, config.max_depth)
    ctl = GoodputController(mode, StepCostModel() if config.learn else StepCostModel.fixed(**asdict(cost)),
                            fixed_budget=budget, max_budget=budget)
    report = ReplayReport(len(requests), 0, 0, 0, 0, 0)
    limit = config.max_new_tokens or max(len(r.output_ids) for r in requests)
    pending = deque(zip(np.asarray(arrivals, np.float64).tolist(), requests))
    waiting: deque = deque()
    running: list[_State] = []
    arrived, drafted, timings = {}, {}, []
    now = busy = 0.0
    while pending or waiting or running:
        while pending and pending[0][0] <= now:
            waiting.append(pending.popleft())
        while waiting and len(running) < config.max_batch_size:
            at, r = waiting.popleft()
            running.append(_State(TraceRecord(r.id, r.prompt_ids, r.output_ids), limit, list(r.prompt_ids)))
            arrived[r.id], drafted[r.id] = at, 0
            if drafter is not None:
                drafter.start(r.id, r.prompt_ids)
                if r.source_ids is not None:
                    drafter.set_source(r.id, r.source_ids)
        if not running:
            now = pending[0][0]  # idle: jump to the next arrival
            continue
        trees = [_propose(s, drafter, rcfg, report) for s in running]  # None: a prefill step
        chains = [min(len(s.tokens) - s.kv_len, rcfg.prefill_chunk) for s in running]
        kv = [s.kv_len for s in running]
        chosen = ctl.select([t if t is not None else DraftTree.empty() for t in trees], chains, kv)
        q = sum(chains) + sum(len(c) for c in chosen)
        seconds = cost.predict(len(running), q, sum(kv))
        ctl.cost_model.observe(len(running), q, sum(kv), seconds)
        now, busy = now + seconds, busy + seconds
        for s, tree, c in zip(running, trees, chosen):
            before = report.nodes
            _advance(s, None if tree is None else c, drafter, rcfg, report)
            drafted[s.rec.id] += report.nodes - before
        for s in running:
            if s.done:
                timings.append(RequestTiming(arrived[s.rec.id], now, s.out_len, s.forwards, drafted[s.rec.id]))
                if drafter is not None:
                    drafter.stop(s.rec.id)
        running = [s for s in running if not s.done]
    return timings, busy


def cycled(requests: list[LoadRequest], n: int) -> list[LoadRequest]:
    """`n` requests going round the records, each with its own id (per-request drafter state)."""
    usable = [r for r in requests if r.output_ids]
    return [LoadRequest(f"{r.id}#{k}", r.prompt_ids, r.source_ids, r.output_ids)
            for k, r in ((k, usable[k % len(usable)]) for k in range(n))]


def capacity(requests: list[LoadRequest], cost: CostCoefficients, config: SimConfig) -> float:
    """Plain-decoding requests/s with every request submitted at once (load_bench's definition)."""
    timings, _ = simulate(requests, np.zeros(len(requests)), cost, "off", config)
    return len(requests) / max(t.finish for t in timings)


def fit_cost(steps, knees=(8, 16, 32, 64, 128, 256, 512)) -> CostCoefficients:
    """The cost curve that best explains measured steps [requests, query tokens, KV tokens, nodes, seconds].

    Non-negative least squares (the engine's own StepCostModel, nothing forgotten, no
    clipping, a negligible prior for well-posedness) at each candidate knee; the knee
    with the smallest squared error wins.
    """
    s = np.asarray(steps, np.float64)
    best, best_err = None, np.inf
    for knee in knees:
        m = StepCostModel(prior=CostCoefficients(knee=knee), prior_weight=1e-3, forget=1.0, max_ratio=np.inf)
        for r, q, kv, _, sec in s:
            m.observe(r, q, kv, sec)
        c = m.coefficients
        err = float(((c.predict(s[:, 0], s[:, 1], s[:, 2]) - s[:, 4]) ** 2).sum())
        if err < best_err:
            best, best_err = c, err
    return best


def steps_of(load_json) -> list[list[float]]:
    """Every step logged by a load_bench run (all workloads, controllers and rates)."""
    runs = json.loads(Path(load_json).read_text())["runs"]
    return [step for w in runs.values() for log in w["steps"].values() for step in log]


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", nargs="+", required=True, help="trace JSONL files, one per workload (gec.jsonl, ...)")
    ap.add_argument("--cost", default="h100-8b", help="h100-8b (an 8B-shaped model measured on an H100), unless --fit-from is given")
    ap.add_argument("--fit-from", default=None, help="a load_bench JSON whose step log gives the cost curve")
    ap.add_argument("--requests", type=int, default=200, help="arrivals per rate (cycling the records)")
    ap.add_argument("--rates", nargs="+", type=float, default=[0.1, 0.3, 0.6, 1.0, 1.5],
                    help="arrival rates as multiples of the simulated plain-decoding capacity")
    ap.add_argument("--controllers", nargs="+", default=["goodput", "fixed-8", "fixed-32", "off"])
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--max-nodes", type=int, default=32)
    ap.add_argument("--max-depth", type=int, default=16)
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--drafter", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", default="eval/results")
    ap.add_argument("--name", default="sim-h100-llama8b")
    return ap


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    cost = fit_cost(steps_of(args.fit_from)) if args.fit_from else H100_8B
    tok = bundled_tokenizer()
    rows = []
    for path in args.traces:
        workload = Path(path).stem.split("-")[0]
        config = SimConfig(args.max_nodes, args.max_depth, args.max_batch_size, max_new_tokens=args.max_new_tokens,
                           drafter=args.drafter, task=workload)
        requests = cycled(from_trace(path, workload, tok), args.requests)
        cap = capacity(requests, cost, config)
        print(f"{workload}: simulated plain-decoding capacity {cap:.3f} requests/s", flush=True)
        for i, load in enumerate(args.rates):
            arrivals = poisson_arrivals(len(requests), load * cap, seed=args.seed + i)
            for c in args.controllers:
                rows.append(summarize(workload, c, load, load * cap, *simulate(requests, arrivals, cost, c, config)))
                print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    rows = with_ratios(rows)
    where = (f"simulated · cost {'fitted from ' + args.fit_from if args.fit_from else args.cost} {asdict(cost)} · "
             f"{args.requests} requests/rate · batch ≤ {args.max_batch_size}")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{args.name}.json", rows, where=where, args=vars(args), cost=asdict(cost))
    plot(rows, out / f"{args.name}.png", f"simulated: {args.name}")
    print(f"\n{where}\n\n{markdown(rows)}\n\nwrote {out / args.name}.json and .png")


if __name__ == "__main__":
    main()
