"""Tree attention whose every query row is computed exactly as plain decoding computes it (CPU).

Same contract as `tree_attention_reference` (tree_attention.py), and one more promise: the
output row of a query is bitwise independent of the other queries, trees and requests in
the call, and equal to what the call gives for the same token decoded alone (one new token,
its ancestors already in the cache). That is what makes speculative output equal plain
output in every dtype.

How (one compiled kernel, numba, `_attend`): a query at position p reduces over exactly the
keys it sees, in position order, one key at a time, whatever part of them is cached and
whatever part is its tree ancestors among the step's new tokens:

  * score = (q · k) · scale, the dot product summed over the head dimension in index order;
  * m = the largest visible score; w = exp(score − m) by `_exp_into`'s polynomial (plain
    arithmetic, so a vectorised lane and the scalar tail compute the same bits; a library exp
    would not promise that);
  * the softmax denominator and the weighted values are sums in position order: the cached
    keys 0..n−1, then the ancestors by position.

Cached keys are scored for all of a request's queries of one KV head at once, the queries in
the vectorised inner loop, so every query's sums still run in the same order. No product
needs a BLAS, whose kernels change with the shape. Nothing is fused into a multiply-add
(numba compiles without fastmath), so where a query sits in the loop changes nothing.

A prefill chunk (more than MAX_TREE_ROWS new tokens and no tree) goes to the reference
(`attend_request`, in blocks of query rows) instead: it is the same chunk of the same request in
plain and speculative decoding (a tree only ever follows the one bonus token), so a
deterministic computation is enough there, and matrix products are faster for many rows.

>>> import torch
>>> q = k = v = torch.ones(2, 1, 4)
>>> cache = torch.zeros(1, 16, 1, 4)
>>> out = tree_attention_invariant(q, k, v, cache, cache, torch.zeros(1, 1, dtype=torch.int32),
...     torch.zeros(1, dtype=torch.int32), torch.tensor([0, 2], dtype=torch.int32),
...     torch.tensor([[0b01], [0b11]]), scale=0.5)
>>> out[:, 0].tolist()
[[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import torch
from numba import njit, prange

from .tree_attention import RequestPlan, attend_request, memoised, prefix_rows, request_trees

MAX_TREE_ROWS = 16  # more new tokens than this, with no tree, is a prefill chunk (the reference)
ROWS_PER_TASK = 16  # a request's queries per parallel task (with one KV head)
KEY_BLOCK = 16  # keys scored together when a task has fewer columns (`_score_keys`): one AVX-512 register


@dataclass
class InvariantPlan:
    """A step's layer-invariant part for the kernel (built once per step and window).

    tasks     int64 [N, 4]: (request, KV head, first row, end row) of each parallel task
    kv_lens   int64 [B]: cached positions per request
    first     int64 [ΣT]: a query's first visible cached position (0 without a window)
    ancestors int64 [ΣT + 1] offsets into `visible`: the new tokens a query sees (itself
              included), as rows of k_new, in position order
    prefills  the reference's plans for the step's prefill chunks, which the kernel skips
    """

    tasks: np.ndarray
    kv_lens: np.ndarray
    first: np.ndarray
    ancestors: np.ndarray
    visible: np.ndarray
    prefills: list[RequestPlan]


def is_chunk(tree: torch.Tensor, positions: torch.Tensor, n_prefix: int) -> bool:
    """Whether the new tokens are a causal chain at positions n, n+1, ...: a prompt chunk, no tree.

    >>> is_chunk(torch.tensor([[1, 0], [1, 1]], dtype=torch.bool), torch.tensor([5, 6]), 5)
    True
    >>> is_chunk(torch.tensor([[1, 0], [1, 0]], dtype=torch.bool), torch.tensor([5, 5]), 5)  # siblings
    False
    """
    t = tree.shape[0]
    causal = torch.ones(t, t, dtype=torch.bool, device=tree.device).tril()
    return torch.equal(tree, causal) and torch.equal(positions.cpu(), n_prefix + torch.arange(t))


def plan_invariant(block_table, kv_lens, qo_indptr, tree_mask, block_size: int, kv_heads: int, *,
                   window: int | None = None, positions: torch.Tensor | None = None) -> InvariantPlan:
    """positions: the new tokens' position ids; without them, kv_len + depth (what the engine feeds)."""
    total = int(qo_indptr[-1])
    first = np.zeros(total, np.int64)
    ancestors = np.zeros(total + 1, np.int64)
    visible, tasks, prefills = [], [], []
    for b, n, (s, e), tree in request_trees(kv_lens, qo_indptr, tree_mask):
        pos = (positions[s:e].cpu().long() if positions is not None else n + tree.sum(1) - 1)
        if e - s > MAX_TREE_ROWS and is_chunk(tree, pos, n):
            k_pos = torch.cat([torch.arange(n), pos])
            vis = k_pos[None, :] <= pos[:, None]
            if window is not None:
                vis &= (pos[:, None] - k_pos[None, :]) < window
            prefills.append(RequestPlan((s, e), prefix_rows(block_table[b].cpu(), n, block_size),
                                        None if vis.all() else vis))
            continue
        seen = tree.cpu().numpy()
        p = pos.numpy()
        for i in range(e - s):
            cols = np.flatnonzero(seen[i])
            if window is not None:
                cols = cols[p[i] - p[cols] < window]
                first[s + i] = max(0, p[i] - window + 1)
            cols = cols[np.argsort(p[cols], kind="stable")]
            if len(np.unique(p[cols])) != len(cols):
                raise ValueError("tree attention needs one visible token per position (a valid tree)")
            visible.append(s + cols)
            ancestors[s + i + 1] = len(cols)
        tasks += [(b, h, r, min(e, r + ROWS_PER_TASK)) for h in range(kv_heads) for r in range(s, e, ROWS_PER_TASK)]
    np.cumsum(ancestors, out=ancestors)
    return InvariantPlan(np.array(tasks, np.int64).reshape(-1, 4), kv_lens.cpu().numpy().astype(np.int64),
                         first, ancestors, np.concatenate(visible or [np.zeros(0, np.int64)]), prefills)


def tree_attention_invariant(
    q, k_new, v_new, k_cache, v_cache, block_table, kv_lens, qo_indptr, tree_mask, scale: float,
    *, window: int | None = None, softcap: float | None = None, positions: torch.Tensor | None = None,
    plans: dict | None = None,
) -> torch.Tensor:
    """Shapes as tree_attention_reference. plans: the per-step memo."""
    kv_heads, d = k_new.shape[1], k_new.shape[2]
    plan = memoised(plans, ("invariant", window), lambda: plan_invariant(
        block_table, kv_lens, qo_indptr, tree_mask, k_cache.shape[1], kv_heads, window=window, positions=positions))
    flat_k, flat_v = k_cache.reshape(-1, kv_heads, d), v_cache.reshape(-1, kv_heads, d)
    out = torch.empty(q.shape, dtype=torch.float32)
    if len(plan.tasks):
        numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
        _attend(q.float().contiguous().numpy(), k_new.float().contiguous().numpy(),
                v_new.float().contiguous().numpy(), _bits(flat_k), _bits(flat_v), k_cache.dtype == torch.bfloat16,
                block_table.cpu().numpy(), k_cache.shape[1], plan.tasks, plan.kv_lens, plan.first, plan.ancestors,
                plan.visible, float(scale), 0.0 if softcap is None else float(softcap), out.numpy())
    out = out.to(q.dtype)
    for req in plan.prefills:
        s, e = req.rows
        out[s:e] = attend_request(q[s:e], k_new[s:e], v_new[s:e], flat_k, flat_v, req, scale, softcap)
    return out


def _bits(flat_cache: torch.Tensor) -> np.ndarray:
    """The cache as numpy: fp32 as it is, bf16 as its uint16 bits (numpy has no bf16), others as fp32."""
    if flat_cache.dtype == torch.bfloat16:
        return flat_cache.view(torch.int16).numpy().view(np.uint16)
    return flat_cache.float().numpy()


@njit(inline="always")
def _exp_into(x, out, bits):
    """out[:n] = exp(x[:n]) for x in [-87, 87] (clamped), n = len(x): Cody–Waite range reduction and
    Cephes' degree-6 polynomial, then 2**k built in the exponent bits. bits: int32 scratch [n]."""
    scale = bits.view(np.float32)
    for i in range(len(x)):
        v = min(max(x[i], np.float32(-87.0)), np.float32(87.0))
        k = np.floor(v * np.float32(1.44269504) + np.float32(0.5))
        r = v - k * np.float32(0.693359375) + k * np.float32(2.12194440e-4)
        p = np.float32(1.9875691500e-4)
        p = p * r + np.float32(1.3981999507e-3)
        p = p * r + np.float32(8.3334519073e-3)
        p = p * r + np.float32(4.1665795894e-2)
        p = p * r + np.float32(1.6666665459e-1)
        p = p * r + np.float32(5.0000001201e-1)
        out[i] = p * r * r + r + np.float32(1.0)
        bits[i] = (np.int32(k) + np.int32(127)) << np.int32(23)
    for i in range(len(x)):
        out[i] = out[i] * scale[i]


@njit(inline="always")
def _cap(x, softcap, tmp, bits):
    """x = softcap · tanh(x / softcap), in place, tanh through _exp_into: tanh(y) = 1 − 2 / (exp(2y) + 1)."""
    for i in range(len(x)):
        tmp[i] = np.float32(2.0) * x[i] / softcap
    _exp_into(tmp, tmp, bits)
    for i in range(len(x)):
        x[i] = softcap * (np.float32(1.0) - np.float32(2.0) / (tmp[i] + np.float32(1.0)))


@njit(inline="always")
def _load(src, row, h, bf16, out, bits):
    """out[:] = fp32 key/value `src[row, h]` (bf16 from its bits)."""
    if bf16:
        for d in range(len(out)):
            bits[d] = np.int32(src[row, h, d]) << np.int32(16)
        wide = bits.view(np.float32)
        for d in range(len(out)):
            out[d] = wide[d]
    else:
        for d in range(len(out)):
            out[d] = src[row, h, d]


@njit(inline="always")
def _score_keys(q, keys, scale, scores):
    """scores [C, n] = (keys [n, D] · q [D, C]) · scale, every dot product summed over D in index order.

    Many columns: one key at a time, the columns in the vectorised loop; few: 16 keys at a time,
    transposed, the keys in it (a loop over a few columns would wait on each sum). The same sum
    either way."""
    n, d, cols = keys.shape[0], q.shape[0], scores.shape[0]
    acc = np.empty(max(KEY_BLOCK, q.shape[1]), np.float32)
    if cols >= KEY_BLOCK:
        for p in range(n):
            acc[:] = 0.0
            for x in range(d):
                kx = keys[p, x]
                for c in range(q.shape[1]):
                    acc[c] = acc[c] + q[x, c] * kx
            for c in range(cols):
                scores[c, p] = acc[c] * scale
        return
    block = np.zeros((d, KEY_BLOCK), np.float32)
    for start in range(0, n, KEY_BLOCK):
        size = min(KEY_BLOCK, n - start)
        for k in range(size):
            for x in range(d):
                block[x, k] = keys[start + k, x]
        for c in range(cols):
            acc[:KEY_BLOCK] = 0.0
            for x in range(d):
                qx = q[x, c]
                for k in range(KEY_BLOCK):
                    acc[k] = acc[k] + qx * block[x, k]
            for k in range(size):
                scores[c, start + k] = acc[k] * scale


@njit(parallel=True, cache=True)
def _attend(q, k_new, v_new, k_cache, v_cache, bf16, block_table, block_size, tasks, kv_lens, first, ancestors,
            visible, scale, softcap, out):
    """q [ΣT, Hq, D], k_new/v_new [ΣT, Hkv, D] fp32; k_cache/v_cache [rows, Hkv, D] (fp32, or bf16 bits);
    writes out [ΣT, Hq, D] fp32 for every task's rows (see InvariantPlan)."""
    hq, d = q.shape[1], q.shape[2]
    g = hq // k_new.shape[1]
    scale, softcap = np.float32(scale), np.float32(softcap)
    for t in prange(tasks.shape[0]):
        b, h, s, e = tasks[t, 0], tasks[t, 1], tasks[t, 2], tasks[t, 3]
        n = kv_lens[b]
        lo, own = n, 1
        for i in range(s, e):
            lo = min(lo, first[i])
            own = max(own, ancestors[i + 1] - ancestors[i])
        cols = (e - s) * g
        wide = cols if cols < KEY_BLOCK else -(-cols // KEY_BLOCK) * KEY_BLOCK  # whole registers
        qt = np.zeros((d, wide), np.float32)  # the task's queries as columns (row, head in group), zeros after
        for c in range(cols):
            for x in range(d):
                qt[x, c] = q[s + c // g, h * g + c % g, x]
        bits = np.empty(max(d, n - lo + own), np.int32)
        keys = np.empty((n - lo, d), np.float32)
        values = np.empty((n - lo, d), np.float32)
        for p in range(lo, n):
            row = block_table[b, p // block_size] * block_size + p % block_size
            _load(k_cache, row, h, bf16, keys[p - lo], bits)
            _load(v_cache, row, h, bf16, values[p - lo], bits)
        scores = np.empty((cols, n - lo + own), np.float32)  # per column: cached keys lo..n-1, then its own
        _score_keys(qt, keys, scale, scores)
        tmp = np.empty(n - lo + own, np.float32)
        mine = np.empty((own, d), np.float32)  # a column's visible new keys
        for c in range(cols):
            i, head = s + c // g, h * g + c % g
            a0, a1 = ancestors[i], ancestors[i + 1]
            for a in range(a0, a1):
                for x in range(d):
                    mine[a - a0, x] = k_new[visible[a], h, x]
            _score_keys(qt[:, c : c + 1], mine[: a1 - a0], scale, scores[c : c + 1, n - lo :])
            row_scores = scores[c, first[i] - lo : n - lo + a1 - a0]
            if softcap > 0:
                _cap(row_scores, softcap, tmp[: len(row_scores)], bits[: len(row_scores)])
            m = np.float32(-np.inf)
            for x in range(len(row_scores)):
                m = max(m, row_scores[x])
            for x in range(len(row_scores)):
                row_scores[x] = row_scores[x] - m
            _exp_into(row_scores, row_scores, bits[: len(row_scores)])  # the weights, in place
            total = np.float32(0.0)  # softmax denominator and weighted values, in position order
            acc = np.zeros(d, np.float32)
            for p in range(first[i], n):
                w = row_scores[p - first[i]]
                total = total + w
                for x in range(d):
                    acc[x] = acc[x] + w * values[p - lo, x]
            for a in range(a0, a1):
                w = row_scores[n - first[i] + a - a0]
                total = total + w
                for x in range(d):
                    acc[x] = acc[x] + w * v_new[visible[a], h, x]
            for x in range(d):
                out[i, head, x] = acc[x] / total
