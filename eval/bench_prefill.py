"""A long prefill chunk's attention, one layer of SmolLM2's shape: the reference's query blocks against
SDPA with the chunk's causal mask (what the reference ran before), side by side, one CPU thread.

    python -m lookahead.eval.bench_prefill --tokens 796 1700
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from lookahead.eval.tables import markdown_table
from lookahead.kernels.tree_attention import RequestPlan, attend_request

Q_HEADS, KV_HEADS, HEAD_DIM = 9, 3, 64  # SmolLM2-135M


def timed(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1000


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", nargs="+", type=int, default=[796, 1700])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for t in args.tokens:
        g = torch.Generator().manual_seed(t)
        q = torch.randn(t, Q_HEADS, HEAD_DIM, generator=g)
        k, v = (torch.randn(t, KV_HEADS, HEAD_DIM, generator=g) for _ in range(2))
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        plan = RequestPlan((0, t), torch.zeros(0, dtype=torch.int64), causal)
        empty = torch.zeros(0, KV_HEADS, HEAD_DIM)
        ours = timed(lambda: attend_request(q, k, v, empty, empty, plan, HEAD_DIM ** -0.5, None), args.repeats)
        qh, kh, vh = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
        sdpa = timed(lambda: F.scaled_dot_product_attention(qh, kh, vh, attn_mask=causal, enable_gqa=True),
                     args.repeats)
        rows.append([t, f"{ours:.1f}", f"{sdpa:.1f}", f"{sdpa / ours:.2f}"])
    print(markdown_table(["chunk tokens", "query blocks ms", "SDPA + mask ms", "speedup"], rows))


if __name__ == "__main__":
    main()
