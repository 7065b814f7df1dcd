"""Load behaviour of a model or GPU we do not run: replayed traces, a step cost curve, a simulated clock.

The real `Engine` serves the recorded requests on a `RecordedTarget` (recorded_target.py),
whose choices are the recorded greedy outputs and whose every forward moves a
`SimulatedClock` by a cost curve's time for the step (StepCostModel coefficients). Requests
arrive at given times (Poisson arrivals in the load benchmark) and join between steps, so
admission, drafting, the goodput controller's pruning, acceptance and truncation are the
engine's own: the simulation predicts the latency and goodput of the load benchmark
(load_bench.py) for a larger model or another GPU. The controller learns its cost model
from the simulated steps as the engine does from measured ones (from the GPU prior), unless
`learn=False` gives it the true curve. Requests cycle through the trace records (unique ids)
to make long arrival streams; the drafter is `auto` without a retrieval datastore, since a
datastore of past outputs would find a cycled request's very output.

Costs come from the H100 measurement of an 8B-shaped model (bf16, HF eager, context 1024), for an 8B-shaped model (`--cost h100-8b`)
or are fitted from the step log of a real load run (`--fit-from load.json`).

Example: a 3-token output replayed by a chain drafter that always guesses right
finishes in 2 steps (prefill, then one verify of 2 nodes); at a flat 10 ms/step
its latency is 20 ms, against 30 ms with plain decoding.

>>> from lookahead.engine.cost_model import CostCoefficients
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

from lookahead.engine.controller import GoodputController
from lookahead.engine.cost_model import CostCoefficients, StepCostModel
from lookahead.drafters import TreeBudget
from lookahead.drafters.mixer import make_drafter
from lookahead.engine import EngineConfig, SamplingParams
from lookahead.engine.recorded_target import RecordedTarget, SimulatedClock
from lookahead.replay import ReplayConfig, TraceRecord, replay_engine

from .load_report import RequestTiming, markdown, plot, summarize, with_ratios, write_json
from .load_requests import LoadRequest, bundled_tokenizer, from_trace, poisson_arrivals

# Measured on an H100, an 8B-shaped model (bf16, HF eager, context 1024): ~40 ms per forward up to
# the knee, 104 ms for 2048 query tokens at batch 32 (the cost model's default prior).
H100_8B = CostCoefficients()


@dataclass
class SimConfig:
    """The engine settings the simulation honours (EngineConfig's names and defaults) and the drafter."""

    max_nodes: int = EngineConfig.max_nodes  # goodput's largest tree per request (fixed-N uses N)
    max_depth: int = EngineConfig.max_depth
    max_batch_size: int = EngineConfig.max_batch_size
    prefill_chunk: int = EngineConfig.prefill_chunk
    max_new_tokens: int | None = None  # None = each recorded output in full
    drafter: str = "auto"
    task: str | None = None  # "gec" adds the source-aligned drafter to auto
    learn: bool = True  # the controller fits its cost model online (False: it knows the true curve)


def simulate(requests: list[LoadRequest], arrivals, cost: CostCoefficients, controller: str,
             config: SimConfig | None = None) -> tuple[list[RequestTiming], float]:
    """Serve trace `requests` arriving at `arrivals` (seconds); their timings and the busy seconds.
    controller: goodput, fixed-N (N nodes per request) or off."""
    config = config or SimConfig()
    mode, _, n = controller.partition("-")
    nodes = int(n) if mode == "fixed" else config.max_nodes
    limit = config.max_new_tokens or max(len(r.output_ids) for r in requests)
    records = [TraceRecord(r.id, r.prompt_ids, r.output_ids) for r in requests]
    clock = SimulatedClock()
    target = RecordedTarget({r.id: r.prompt_ids + r.output_ids for r in requests}, cost=cost, clock=clock)
    drafter = None if mode == "off" else make_drafter(config.drafter, task=config.task)
    replay_config = ReplayConfig(nodes, config.max_depth, config.max_batch_size, config.prefill_chunk, mode)
    engine = replay_engine(records, drafter, replay_config, limit, target, clock)
    budget = TreeBudget(nodes, config.max_depth)
    engine.controller = GoodputController(mode, StepCostModel() if config.learn else StepCostModel.fixed(**asdict(cost)),
                                          fixed_budget=budget, max_budget=budget)
    pending = deque(zip(np.asarray(arrivals, np.float64).tolist(), requests))
    timings, busy = [], 0.0
    while pending or engine.has_work():
        while pending and pending[0][0] <= clock.now:
            at, r = pending.popleft()
            req = engine.add(r.id, r.prompt_ids, SamplingParams(max_new_tokens=min(limit, len(r.output_ids))),
                             source_ids=r.source_ids)
            req.arrived = at
        if not engine.has_work():
            clock.now = pending[0][0]  # idle: jump to the next arrival
            continue
        before = clock.now
        for req in engine.step():
            timings.append(RequestTiming(req.arrived, req.finished_at, len(req.output_ids), req.forwards, req.drafted))
        busy += clock.now - before
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
