"""`lookahead run --ray` on this machine with 1 and 2 workers, and a projection for N GPUs.

Measured, side by side in one run on the bundled workload (greedy, `auto` drafter,
goodput controller): one process using every core; a Ray fleet of one worker using
every core; a fleet of two workers with half the cores each. Each first decodes a
shard of other cases per worker (a worker's first shard pays seconds of one-off
set-up). Tokens/s over the measured cases alone (start-up, warm-up included, is its
own column: Ray and one model load per worker),
τ, outputs identical to the single process, and the driver's CPU seconds per
request: only the driver hands out work and receives every result, so that is
what caps a fleet.

Projected: N GPUs, each serving as the replay simulator predicts for an H100 with
an 8B-shaped model (its cost curve measured with HF eager in bf16; the bundled traces of greedy outputs;
every request submitted at once, batch ≤ 32, goodput controller), so the fleet
makes N × one GPU's tokens/s until the driver's measured cost per request caps it.

  python -m lookahead.eval.bench_fleet --workload gec --limit 16 --max-new-tokens 64
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lookahead.eval.tables import markdown_table
from lookahead.eval.workloads import load_workload

TRACES = Path(__file__).resolve().parent / "traces"


@dataclass
class Row:
    system: str
    workers: int
    threads_per_worker: int
    requests: int
    output_tokens: int
    tau: float
    tokens_per_s: float
    startup_s: float
    decode_s: float
    driver_cpu_ms_per_request: float
    identical: int  # outputs equal to the single process's
    speedup_vs_single: float = 0.0


def decode(lm, cases: list[dict], max_new_tokens: int) -> tuple[dict, float, float]:
    """id -> Result, wall seconds and this process's CPU seconds of one decoding pass."""
    wall, cpu = time.perf_counter(), time.process_time()
    results = {r.id: r for r in lm.results(cases, max_new_tokens=max_new_tokens)}
    return results, time.perf_counter() - wall, time.process_time() - cpu


def row(system: str, workers: int, threads: int, results: dict, startup: float, wall: float, cpu: float,
        reference: dict | None) -> Row:
    tokens = sum(r.output_tokens for r in results.values())
    forwards = sum(r.target_forwards for r in results.values())
    same = sum(reference is None or r.token_ids == reference[r.id].token_ids for r in results.values())
    return Row(system, workers, threads, len(results), tokens, tokens / max(1, forwards), tokens / wall, startup,
               wall, 1000 * cpu / len(results), same)


def measure(args, cases: list[dict], warm: list[dict]) -> list[Row]:
    import ray
    import torch

    from lookahead import EngineConfig, Fleet, Lookahead

    cores = os.cpu_count() or 1
    config = EngineConfig(max_batch_size=args.max_batch_size)
    kw = dict(drafter=args.drafter, config=config, task="gec" if args.workload.startswith("gec") else "rag")
    torch.set_num_threads(cores)
    start = time.perf_counter()
    lm = Lookahead(args.model, **kw)
    startup = time.perf_counter() - start
    decode(lm, warm, 16)  # a worker's first shard pays seconds of one-off set-up: not part of the rate
    single, wall, cpu = decode(lm, cases, args.max_new_tokens)
    rows = [row("one process", 1, cores, single, startup, wall, cpu, None)]
    del lm
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    try:
        for workers in args.workers:
            start = time.perf_counter()
            with Fleet(args.model, workers=workers, shard_size=args.shard_size, **kw) as fleet:
                decode(fleet, warm, 16)
                startup = time.perf_counter() - start
                results, wall, cpu = decode(fleet, cases, args.max_new_tokens)
            rows.append(row(f"Ray, {workers} worker{'s' * (workers > 1)}", workers, cores // workers, results,
                            startup, wall, cpu, single))
    finally:
        ray.shutdown()
    for r in rows:
        r.speedup_vs_single = r.tokens_per_s / rows[0].tokens_per_s
    return rows


def projection(args, driver_ms_per_request: float, gpus: list[int]) -> tuple[float, float, list[dict]]:
    """Simulated tokens/s of one H100 (8B-shaped model), the driver's cap, and the fleet's for each N."""
    from lookahead.eval.load_requests import bundled_tokenizer, from_trace
    from lookahead.eval.simulator import H100_8B, SimConfig, simulate

    workload = "gec" if args.workload.startswith("gec") else "rag"
    requests = from_trace(TRACES / f"{workload}-smollm2-128.jsonl", workload, bundled_tokenizer())
    timings, _ = simulate(requests, np.zeros(len(requests)), H100_8B, "goodput",
                          SimConfig(max_batch_size=32, task=workload))
    per_gpu = sum(t.output_tokens for t in timings) / max(t.finish for t in timings)
    tokens_per_request = float(np.mean([t.output_tokens for t in timings]))
    ceiling = tokens_per_request * 1000 / driver_ms_per_request
    return per_gpu, ceiling, [{"gpus": n, "tokens_per_s": min(n * per_gpu, ceiling), "driver_bound": n * per_gpu > ceiling}
                     for n in gpus]


def markdown(rows: list[Row]) -> str:
    return markdown_table(
        ["system", "workers × threads", "requests", "τ", "tokens/s", "vs one process", "start-up s",
         "driver CPU ms/request", "identical"],
        [[r.system, f"{r.workers} × {r.threads_per_worker}", r.requests, f"{r.tau:.2f}", f"{r.tokens_per_s:.1f}",
          f"{r.speedup_vs_single:.2f}×", f"{r.startup_s:.1f}", f"{r.driver_cpu_ms_per_request:.1f}",
          f"{r.identical}/{r.requests}"] for r in rows])


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="gec", choices=["gec", "rag", "gec-ua"])
    ap.add_argument("--limit", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--max-batch-size", type=int, default=8)
    ap.add_argument("--shard-size", type=int, default=None, help="most requests per hand-out [default: Fleet's]")
    ap.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--drafter", default="auto")
    ap.add_argument("--model", default=None, help="default: the bundled SmolLM2")
    ap.add_argument("--gpus", nargs="+", type=int, default=[1, 2, 4, 8, 16, 64, 256])
    ap.add_argument("--json", default=None, help="also write the rows here")
    return ap


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    # Warm-up cases come after the measured ones: a shard of two for each worker of the largest fleet.
    n_warm = 2 * max(args.workers)
    cases = [{"id": c["id"], "messages": c["messages"], "source": c.get("source")}
             for c in load_workload(args.workload, limit=args.limit + n_warm)]
    cases, warm = cases[: args.limit], cases[args.limit:]
    rows = measure(args, cases, warm)
    driver = max(r.driver_cpu_ms_per_request for r in rows[1:])  # the fleets' drivers
    per_gpu, ceiling, proj = projection(args, driver, args.gpus)
    print(f"fleet · {args.workload} × {len(cases)} · SmolLM2 fp32 · {args.max_new_tokens} new tokens · "
          f"{os.cpu_count()} cores · {platform.processor() or platform.machine()}\n")
    print(markdown(rows))
    print(f"\nProjection: one H100 with an 8B-shaped model serves {per_gpu:.0f} tokens/s on the {args.workload} "
          f"traces (simulated); the driver's {driver:.1f} ms of CPU per request caps a fleet at "
          f"{ceiling:.0f} tokens/s.\n")
    print(markdown_table(["GPUs", "projected tokens/s", "bound by"],
                         [[p["gpus"], f"{p['tokens_per_s']:.0f}", "the driver" if p["driver_bound"] else "the GPUs"]
                          for p in proj]))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": [asdict(r) for r in rows], "per_gpu_tokens_per_s": per_gpu,
                                               "driver_cpu_ms_per_request": driver, "driver_cap_tokens_per_s": ceiling,
                                               "projection": proj,
                                               "args": vars(args)}, indent=1))


if __name__ == "__main__":
    main()
