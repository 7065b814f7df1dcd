"""Retrieval datastore at scale: build rate, incremental additions, propose latency (one core).

The corpus is synthetic (the scale test needs 10M tokens, more than the bundled
data): documents of 50-2000 Zipf-distributed tokens over a 49,152-token
vocabulary, a third of each copying spans of earlier documents so that contexts
find long matches with several continuations, as in a real domain corpus. Each
propose comes from a request whose context ends in a corpus window with its last
token changed half of the time (so some lookups only match short suffixes).

    python -m lookahead.eval.bench_retrieval                 # 10M tokens, markdown table
    python -m lookahead.eval.bench_retrieval --tokens 1000000 --steps 500
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from lookahead.drafters import RetrievalDrafter, RetrievalStore, TreeBudget

VOCAB = 49152


def synthetic_corpus(n_tokens: int, seed: int = 0) -> list[np.ndarray]:
    """Documents totalling n_tokens: Zipf runs interleaved with copies of earlier spans."""
    rng = np.random.default_rng(seed)
    flat = np.empty(n_tokens, np.int64)
    i = 0
    while i < n_tokens:
        if i > 1000 and rng.random() < 0.33:
            span = int(rng.integers(5, 51))
            src = int(rng.integers(0, i - span))
            chunk = flat[src : src + span].copy()
        else:
            chunk = np.minimum(rng.zipf(1.2, size=int(rng.integers(5, 30))), VOCAB) - 1
        k = min(len(chunk), n_tokens - i)
        flat[i : i + k] = chunk[:k]
        i += k
    cuts = np.cumsum(rng.integers(50, 2001, size=n_tokens // 50 + 1))
    return np.split(flat, cuts[cuts < n_tokens])


def percentiles(xs) -> tuple[float, float]:
    return float(np.percentile(xs, 50)), float(np.percentile(xs, 99))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=10_000_000, help="corpus tokens")
    ap.add_argument("--steps", type=int, default=2000, help="proposals timed")
    ap.add_argument("--outputs", type=int, default=300, help="past outputs added one by one")
    ap.add_argument("--nodes", type=int, default=32)
    ap.add_argument("--depth", type=int, default=16)
    args = ap.parse_args(argv)
    budget = TreeBudget(args.nodes, args.depth)
    docs = synthetic_corpus(args.tokens)

    warm = RetrievalStore()  # compile (or load from cache) before timing
    warm.extend(docs[:3])
    warm.draft(list(docs[0][:8]), budget)

    store = RetrievalStore()
    t0 = time.perf_counter()
    store.extend(docs)
    build_s = time.perf_counter() - t0

    rng = np.random.default_rng(1)
    drafter = RetrievalDrafter(store)
    lat, cpu, nodes, matched = [], [], [], []
    for step in range(args.steps):
        doc = docs[int(rng.integers(len(docs)))]
        end = int(rng.integers(20, len(doc)))
        ctx = doc[end - 20 : end].copy()
        if step % 2:
            ctx[-1] = int(rng.integers(VOCAB))
        drafter.start("r", ctx)
        t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        tree = drafter.propose("r", budget)
        cpu.append((time.thread_time_ns() - c0) / 1e3)
        lat.append((time.perf_counter_ns() - t0) / 1e3)
        nodes.append(len(tree))
        matched.append(store.draft(ctx, budget)[1])
        drafter.stop("r")  # nothing generated: nothing added

    add_ms = []
    for _ in range(args.outputs):  # past responses of ~200 tokens join the store
        out = np.minimum(rng.zipf(1.2, size=200), VOCAB) - 1
        t0 = time.perf_counter()
        store.add(out)
        add_ms.append((time.perf_counter() - t0) * 1e3)

    p50, p99 = percentiles(lat)
    c50, c99 = percentiles(cpu)
    a50, a99 = percentiles(add_ms)
    print(f"Retrieval datastore, {args.tokens:,} synthetic Zipf tokens in {len(docs):,} documents, "
          f"budget {args.nodes} nodes / depth {args.depth}, one core\n")
    print("| metric | value |\n|---|---|")
    print(f"| build | {build_s:.2f} s ({args.tokens / build_s / 1e6:.2f} M tokens/s) |")
    print(f"| propose wall p50 / p99 | {p50:.0f} / {p99:.0f} µs |")
    print(f"| propose CPU p50 / p99 | {c50:.0f} / {c99:.0f} µs |")
    print(f"| mean nodes / mean match length | {np.mean(nodes):.1f} / {np.mean(matched):.1f} |")
    print(f"| add a 200-token output p50 / p99 | {a50:.2f} / {a99:.1f} ms |")
    print(f"| segments after {args.outputs} additions | {store.num_segments} |")


if __name__ == "__main__":
    main()
