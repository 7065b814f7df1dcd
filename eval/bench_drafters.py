"""Propose latency of the drafters at several context lengths (one core, CPU).

The context is synthetic but shaped like RAG work: Zipf-distributed tokens over a
49,152-token vocabulary in which a third of the text copies earlier spans. Each
step proposes, then appends 1-4 tokens of the true continuation, as the engine does.

    python -m lookahead.eval.bench_drafters            # markdown table on stdout
    python -m lookahead.eval.bench_drafters --steps 200 --contexts 1000 32000
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from lookahead.drafters import PromptLookupDrafter, SuffixAutomatonDrafter, TreeBudget

VOCAB = 49152


def synthetic_context(n: int, seed: int = 0) -> np.ndarray:
    """n tokens: Zipf draws interleaved with copies of earlier spans (5-50 tokens)."""
    rng = np.random.default_rng(seed)
    out = np.empty(n, np.int64)
    i = 0
    while i < n:
        if i > 100 and rng.random() < 0.33:
            span = int(rng.integers(5, 51))
            src = int(rng.integers(0, i - span))
            chunk = out[src : src + span]
        else:
            chunk = np.minimum(rng.zipf(1.2, size=int(rng.integers(5, 30))), VOCAB) - 1
        k = min(len(chunk), n - i)
        out[i : i + k] = chunk[:k]
        i += k
    return out


def bench(drafter, tokens: np.ndarray, n_ctx: int, steps: int, budget: TreeBudget, seed: int = 1):
    """Propose µs (wall p50, wall p99, CPU p99), mean nodes, µs per appended token, start s.

    CPU time (thread_time) leaves out preemption by other processes, which dominates
    the wall-clock tail on a shared machine.
    """
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    drafter.start("bench", tokens[:n_ctx])
    start_s = time.perf_counter() - t0
    lat, cpu, nodes, i = [], [], [], n_ctx
    upd_s, upd_n = 0.0, 0
    for _ in range(steps):
        t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        tree = drafter.propose("bench", budget)
        cpu.append((time.thread_time_ns() - c0) / 1e3)
        lat.append((time.perf_counter_ns() - t0) / 1e3)
        nodes.append(len(tree))
        k = int(rng.integers(1, 5))
        t1 = time.perf_counter()
        drafter.update("bench", tokens[i : i + k])
        upd_s += time.perf_counter() - t1
        upd_n += k
        i += k
    drafter.stop("bench")
    p50, p99 = np.percentile(lat, [50, 99])
    return p50, p99, np.percentile(cpu, 99), np.mean(nodes), 1e6 * upd_s / upd_n, start_s


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contexts", type=int, nargs="+", default=[1_000, 32_000, 128_000])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--nodes", type=int, default=32)
    ap.add_argument("--depth", type=int, default=8)
    args = ap.parse_args(argv)
    budget = TreeBudget(args.nodes, args.depth)
    tokens = synthetic_context(max(args.contexts) + 5 * args.steps)
    drafters = {"prompt-lookup": PromptLookupDrafter, "suffix": SuffixAutomatonDrafter}
    print(f"budget: {args.nodes} nodes, depth {args.depth}; {args.steps} steps per row\n")
    print("| drafter | context | propose p50 µs | p99 µs | p99 CPU µs | mean nodes | update µs/token | start s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, cls in drafters.items():
        for n_ctx in args.contexts:
            p50, p99, cpu99, nodes, upd, start = bench(cls(), tokens, n_ctx, args.steps, budget)
            print(f"| {name} | {n_ctx:,} | {p50:.1f} | {p99:.1f} | {cpu99:.1f} | {nodes:.1f} | {upd:.2f} | {start:.3f} |")


if __name__ == "__main__":
    main()
