"""Benchmark the Triton tree-attention kernel against PyTorch SDPA with a dense mask.

Both kernels: the fast one (tree_attention_triton.py) and the tree-invariant one that exact
runs use (invariant_attention_triton.py; the "exact / kernel" column is the price of invariance).
Sweeps batch x tree nodes x context with 8B-style heads (32 query / 8 KV heads, head dim
128, bf16, 16-token pages) and reports milliseconds and the achieved KV read bandwidth:
the bytes of K and V a request must read at least once (committed prefix + tree, every KV
head) over the time, as a fraction of the GPU's peak (default 3.35e12 B/s, H100 SXM).

SDPA gets the favourable setup: K/V already gathered into contiguous [B, Hkv, ctx + N, D]
tensors (the gather is not timed), a bool mask [B, 1, N, ctx + N], enable_gqa=True, and
whichever backend PyTorch picks. Both outputs are compared (max abs difference column).

    python -m lookahead.eval.bench_kernel --json results/kernel.json
    python -m lookahead.eval.bench_kernel --interpret --tiny   # CPU smoke test, no GPU
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Heads:
    q_heads: int
    kv_heads: int
    head_dim: int
    page: int
    dtype: torch.dtype


LLAMA_8B = Heads(q_heads=32, kv_heads=8, head_dim=128, page=16, dtype=torch.bfloat16)
# Under the interpreter: odd head dim, GQA 2, fp32 (bf16 is broken there).
TINY = Heads(q_heads=4, kv_heads=2, head_dim=24, page=16, dtype=torch.float32)


@dataclass
class Result:
    batch: int
    tree: int
    context: int
    kernel_ms: float  # the fast kernel (tree_attention_triton.py)
    exact_ms: float  # the tree-invariant kernel (invariant_attention_triton.py), what exact runs use
    sdpa_ms: float
    kv_bytes: int  # K and V bytes read at least once: B * (context + tree) * Hkv * D * 2 * itemsize
    kernel_bw_frac: float  # kv_bytes / kernel time / peak bandwidth
    sdpa_bw_frac: float
    max_abs_diff: float  # kernel vs SDPA output
    exact_max_abs_diff: float  # tree-invariant kernel vs SDPA output


@dataclass
class Inputs:
    """One case's tensors in both layouts (N = tree nodes per request)."""

    kernel_args: tuple  # tree_attention_triton's positional arguments, scale last
    sdpa_q: torch.Tensor  # [B, Hq, N, D]
    sdpa_k: torch.Tensor  # [B, Hkv, ctx + N, D]
    sdpa_v: torch.Tensor  # [B, Hkv, ctx + N, D]
    sdpa_mask: torch.Tensor  # bool [B, 1, N, ctx + N]


def random_tree_masks(n_nodes: int, rng: np.random.Generator) -> torch.Tensor:
    """bool [N, N] ancestor masks of a random tree (a node's parent: an earlier node or the root)."""
    from lookahead.drafters import DraftTree

    parents = np.array([rng.integers(-1, i) for i in range(n_nodes)], np.int32)
    tree = DraftTree(np.zeros(n_nodes, np.int64), parents, np.ones(n_nodes, np.float32))
    return torch.from_numpy(tree.ancestor_masks())


def make_inputs(batch: int, n_nodes: int, context: int, heads: Heads, device: str,
                seed: int = 0) -> Inputs:
    from lookahead.kernels.tree_attention import pack_mask

    gen = torch.Generator(device="cpu").manual_seed(seed)
    device_gen = torch.Generator(device=device).manual_seed(seed)
    rng = np.random.default_rng(seed)
    hq, hkv, d, page = heads.q_heads, heads.kv_heads, heads.head_dim, heads.page

    def randn(*shape):
        return torch.randn(*shape, generator=device_gen, device=device, dtype=heads.dtype)

    pages_per_req = max(1, -(-context // page))
    k_cache = randn(batch * pages_per_req, page, hkv, d)
    v_cache = randn(batch * pages_per_req, page, hkv, d)
    # Shuffled pages, as a long-running cache would hold them.
    block_table = torch.randperm(batch * pages_per_req, generator=gen).view(batch, pages_per_req)
    block_table = block_table.to(device=device, dtype=torch.int32)
    kv_lens = torch.full((batch,), context, dtype=torch.int32, device=device)
    qo_indptr = torch.arange(batch + 1, dtype=torch.int32, device=device) * n_nodes
    q = randn(batch * n_nodes, hq, d)
    k_new = randn(batch * n_nodes, hkv, d)
    v_new = randn(batch * n_nodes, hkv, d)
    trees = [random_tree_masks(n_nodes, rng) for _ in range(batch)]
    tree_mask = torch.cat([pack_mask(t) for t in trees]).to(device)

    def contiguous_kv(cache, new):  # [B, Hkv, ctx + N, D]
        prefix = cache[block_table.long()].reshape(batch, -1, hkv, d)[:, :context]
        return torch.cat([prefix, new.view(batch, n_nodes, hkv, d)], 1).transpose(1, 2).contiguous()

    tree_dense = torch.stack(trees).to(device)  # [B, N, N]
    mask = torch.cat([tree_dense.new_ones(batch, n_nodes, context), tree_dense], 2)[:, None]
    return Inputs(
        kernel_args=(q, k_new, v_new, k_cache, v_cache, block_table, kv_lens, qo_indptr,
                     tree_mask, d ** -0.5),
        sdpa_q=q.view(batch, n_nodes, hq, d).transpose(1, 2).contiguous(),
        sdpa_k=contiguous_kv(k_cache, k_new),
        sdpa_v=contiguous_kv(v_cache, v_new),
        sdpa_mask=mask,
    )


def time_ms(fn, interpret: bool) -> float:
    """Median CUDA-event time (triton.testing.do_bench); one wall-clock call when interpreted."""
    if interpret:
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3
    import triton.testing

    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def run_case(batch: int, n_nodes: int, context: int, heads: Heads, device: str,
             peak_bw: float, interpret: bool) -> Result:
    from lookahead.kernels.invariant_attention_triton import tree_attention_invariant_triton
    from lookahead.kernels.tree_attention_triton import tree_attention_triton

    x = make_inputs(batch, n_nodes, context, heads, device)
    scale = x.kernel_args[-1]

    def kernel():
        return tree_attention_triton(*x.kernel_args)

    def exact():
        return tree_attention_invariant_triton(*x.kernel_args)

    def sdpa():
        return F.scaled_dot_product_attention(x.sdpa_q, x.sdpa_k, x.sdpa_v, attn_mask=x.sdpa_mask,
                                              scale=scale, enable_gqa=True)

    expect = sdpa().transpose(1, 2).reshape(batch * n_nodes, heads.q_heads, -1)
    diff = kernel().float() - expect.float()
    exact_diff = exact().float() - expect.float()
    kernel_ms, exact_ms, sdpa_ms = (time_ms(f, interpret) for f in (kernel, exact, sdpa))
    itemsize = torch.finfo(heads.dtype).bits // 8
    kv_bytes = batch * (context + n_nodes) * heads.kv_heads * heads.head_dim * 2 * itemsize
    return Result(
        batch=batch, tree=n_nodes, context=context, kernel_ms=kernel_ms, exact_ms=exact_ms, sdpa_ms=sdpa_ms,
        kv_bytes=kv_bytes,
        kernel_bw_frac=kv_bytes / (kernel_ms * 1e-3) / peak_bw,
        sdpa_bw_frac=kv_bytes / (sdpa_ms * 1e-3) / peak_bw,
        max_abs_diff=diff.abs().max().item(), exact_max_abs_diff=exact_diff.abs().max().item(),
    )


def markdown_table(results: list[Result], peak_bw: float) -> str:
    lines = [
        "| batch | tree | context | kernel ms | exact kernel ms | SDPA ms | speedup | exact / kernel "
        "| kernel KV GB/s | kernel % peak | SDPA % peak | max abs diff | exact max abs diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        gbs = r.kernel_bw_frac * peak_bw / 1e9
        lines.append(
            f"| {r.batch} | {r.tree} | {r.context} | {r.kernel_ms:.3f} | {r.exact_ms:.3f} | {r.sdpa_ms:.3f} "
            f"| {r.sdpa_ms / r.kernel_ms:.2f}x | {r.exact_ms / r.kernel_ms:.2f}x | {gbs:.3g} "
            f"| {100 * r.kernel_bw_frac:.1f} | {100 * r.sdpa_bw_frac:.1f} | {r.max_abs_diff:.2e} "
            f"| {r.exact_max_abs_diff:.2e} |"
        )
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--tree", type=int, nargs="+", default=[1, 16, 64], help="tree nodes per request")
    p.add_argument("--context", type=int, nargs="+", default=[1024, 4096, 16384],
                   help="committed tokens per request")
    p.add_argument("--peak-bw", type=float, default=3.35e12,
                   help="GPU memory bandwidth in bytes/s (default: H100 SXM HBM3)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--interpret", action="store_true",
                   help="run the kernel under TRITON_INTERPRET=1 on the CPU (needs --tiny)")
    p.add_argument("--tiny", action="store_true",
                   help="tiny heads (4 q / 2 kv, dim 24, fp32) and, unless given, a tiny sweep")
    args = p.parse_args(argv)
    if args.interpret and not args.tiny:
        p.error("--interpret is ~1000x slower than a GPU: use it with --tiny")
    if args.tiny:  # shrink only the sweeps left at their defaults
        for name, small in (("batch", [1, 2]), ("tree", [1, 5]), ("context", [0, 40])):
            if getattr(args, name) == p.get_default(name):
                setattr(args, name, small)
    return args


def main(argv=None) -> list[Result]:
    args = parse_args(argv)
    if args.interpret:
        os.environ["TRITON_INTERPRET"] = "1"  # read when the kernel module is first imported
        device = "cpu"
    elif torch.cuda.is_available():
        device = "cuda"
    else:
        sys.exit("bench_kernel: no CUDA GPU found (for a CPU smoke test use --interpret --tiny)")
    heads = TINY if args.tiny else LLAMA_8B
    gpu_name = torch.cuda.get_device_name() if device == "cuda" else "cpu (interpreter)"
    print(f"heads {heads.q_heads}q/{heads.kv_heads}kv x {heads.head_dim}, {heads.dtype}, "
          f"page {heads.page}, device {gpu_name}")
    results = []
    for batch in args.batch:
        for context in args.context:
            for n_nodes in args.tree:
                results.append(run_case(batch, n_nodes, context, heads, device, args.peak_bw,
                                        args.interpret))
                if device == "cuda":
                    torch.cuda.empty_cache()
    print(markdown_table(results, args.peak_bw))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"heads": {**asdict(heads), "dtype": str(heads.dtype)}, "peak_bw": args.peak_bw,
                       "results": [asdict(r) for r in results]}, f, indent=2)
    return results


if __name__ == "__main__":
    main()
