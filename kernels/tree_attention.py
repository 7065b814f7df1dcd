"""Tree attention over a paged KV cache: the plain-PyTorch reference (oracle and CPU path).

One call scores the query tokens of a batch of requests. Request b owns the rows
qo_indptr[b]:qo_indptr[b+1] of q/k_new/v_new (its step's new tokens: the uncached
committed tokens, then its draft tree). Query i of request b attends to
  * the committed prefix: cache positions [0, kv_lens[b]) through block_table[b], no mask;
  * new token j of the same request iff bit (j % 64) of tree_mask[i, j // 64] is set.

Two keyword-only options cover Gemma-style layers (transformers' semantics):
  * window (sliding-window layers): additionally, a key at position k is visible to a
    query at position p only if p - k < window (the query's own position counts, so a
    window of 1 sees only itself). A cached key at index i has position i; new token t
    has position positions[t], which is required with a window;
  * softcap (Gemma-2): scores become softcap * tanh(scores / softcap) before the mask.

Shapes (ΣT = total new tokens, Hq = Hkv * group, W = mask words):
  q          [ΣT, Hq, D]             k_new, v_new [ΣT, Hkv, D]
  k_cache    [blocks, block, Hkv, D]  v_cache      same
  block_table int32 [B, max_blocks]   kv_lens      int32 [B]
  qo_indptr  int32 [B + 1]            tree_mask    int64 [ΣT, W]
  positions  int [ΣT] (with a window)
  returns    [ΣT, Hq, D] in q's dtype

Example: one request, empty cache, a chain of 2 tokens that see themselves causally:
>>> import torch
>>> q = k = v = torch.ones(2, 1, 4)
>>> cache = torch.zeros(1, 16, 1, 4)
>>> out = tree_attention_reference(q, k, v, cache, cache, torch.zeros(1, 1, dtype=torch.int32),
...     torch.zeros(1, dtype=torch.int32), torch.tensor([0, 2], dtype=torch.int32),
...     torch.tensor([[0b01], [0b11]]), scale=0.5)
>>> out.shape
torch.Size([2, 1, 4])

The same chain at positions 5 and 6 under a window of 1: each token sees only itself, so
with v = [1, 2] the output is v itself.
>>> v = torch.tensor([1.0, 2.0]).view(2, 1, 1).expand(2, 1, 4)
>>> tree_attention_reference(q, k, v, cache, cache, torch.zeros(1, 1, dtype=torch.int32),
...     torch.zeros(1, dtype=torch.int32), torch.tensor([0, 2], dtype=torch.int32),
...     torch.tensor([[0b01], [0b11]]), scale=0.5, window=1, softcap=30.0,
...     positions=torch.tensor([5, 6]))[:, 0, 0].tolist()
[1.0, 2.0]
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

_BITS = torch.arange(64, dtype=torch.int64)


def unpack_mask(tree_mask: torch.Tensor, n: int) -> torch.Tensor:
    """bool [rows, n] from int64 bit words [rows, W]."""
    bits = (tree_mask.unsqueeze(-1) >> _BITS.to(tree_mask.device)) & 1  # [rows, W, 64]
    return bits.reshape(tree_mask.shape[0], -1)[:, :n].bool()


def pack_mask(dense: torch.Tensor) -> torch.Tensor:
    """int64 [rows, ceil(n/64)] bit words from bool [rows, n] (inverse of unpack_mask)."""
    rows, n = dense.shape
    words = max(1, -(-n // 64))
    padded = torch.zeros(rows, words * 64, dtype=torch.int64, device=dense.device)
    padded[:, :n] = dense.long()
    shifted = padded.view(rows, words, 64) << _BITS.to(dense.device)
    return shifted.sum(-1)  # bits are disjoint, so the sum is the bitwise or (wraps into bit 63)


def prefix_rows(blocks: torch.Tensor, length: int, block_size: int) -> torch.Tensor:
    """int64 [length]: the rows of the flattened cache [blocks * block, Hkv, D] that hold a request's prefix."""
    n_blocks = -(-length // block_size)
    offsets = torch.arange(block_size, device=blocks.device)
    return (blocks[:n_blocks].long()[:, None] * block_size + offsets).flatten()[:length]


def memoised(plans: dict | None, key, build):
    """plans[key], made by build() the first time it is asked for (a step's layers share one plan)."""
    if plans is None:
        return build()
    if key not in plans:
        plans[key] = build()
    return plans[key]


def request_trees(kv_lens, qo_indptr, tree_mask):
    """(b, kv_len, (s, e), bool [T, T] visibility among its new tokens) for every request with new tokens."""
    indptr = qo_indptr.tolist()
    for b, n_prefix in enumerate(kv_lens.tolist()):
        s, e = indptr[b], indptr[b + 1]
        if e > s:
            yield b, n_prefix, (s, e), unpack_mask(tree_mask[s:e], e - s)


@dataclass
class RequestPlan:
    """One request's part of a step, the same in every layer: built once per step (and window).

    rows     (s, e): its new tokens are rows s:e of q, k_new and v_new
    prefix   int64 [n_prefix]: its cached positions as rows of the flattened cache
    visible  bool [T, n_prefix + T]: which keys each query sees; None when it sees all of them
    """

    rows: tuple[int, int]
    prefix: torch.Tensor
    visible: torch.Tensor | None


def plan_reference(block_table, kv_lens, qo_indptr, tree_mask, block_size: int, *, window: int | None = None,
                   positions: torch.Tensor | None = None) -> list[RequestPlan]:
    """The reference's layer-invariant work for a step: one plan per request with new tokens."""
    if window is not None and positions is None:
        raise ValueError("a sliding window needs the new tokens' positions")
    out = []
    for b, n_prefix, (s, e), tree in request_trees(kv_lens, qo_indptr, tree_mask):
        visible = torch.cat([tree.new_ones(e - s, n_prefix), tree], dim=1)
        if window is not None:
            q_pos = positions[s:e].to(tree.device, torch.int64)
            k_pos = torch.cat([torch.arange(n_prefix, device=tree.device), q_pos])
            visible &= (q_pos[:, None] - k_pos[None, :]) < window
        out.append(RequestPlan((s, e), prefix_rows(block_table[b], n_prefix, block_size),
                               None if visible.all() else visible))
    return out


# Query rows per matmul-softmax-matmul in a long chunk (a prefill): each block reads only the keys up to
# its last visible one, so a causal chunk skips the keys after it. 128 rows in fp32 with the GQA group
# folded in ran 3.6x (796 tokens) and 3.2x (1700) faster than SDPA with the chunk's mask, one layer of
# SmolLM2's shape on one core (python -m lookahead.eval.bench_prefill, eval/RESULTS.md §0); 64 and 256
# rows were slower.
QUERY_BLOCK = 128


def tree_attention_reference(
    q, k_new, v_new, k_cache, v_cache, block_table, kv_lens, qo_indptr, tree_mask, scale: float,
    *, window: int | None = None, softcap: float | None = None, positions: torch.Tensor | None = None,
    plans: dict | None = None,
) -> torch.Tensor:
    """plans: a dict the caller keeps for one step; the layer-invariant plan is memoised in it by window."""
    plan = memoised(plans, window, lambda: plan_reference(block_table, kv_lens, qo_indptr, tree_mask,
                                                          k_cache.shape[1], window=window, positions=positions))
    out = torch.empty_like(q)
    kv_heads, d = k_new.shape[1], k_new.shape[2]
    flat_k, flat_v = k_cache.reshape(-1, kv_heads, d), v_cache.reshape(-1, kv_heads, d)
    for req in plan:
        s, e = req.rows
        out[s:e] = attend_request(q[s:e], k_new[s:e], v_new[s:e], flat_k, flat_v, req, scale, softcap)
    return out


def attend_request(q, k_new, v_new, flat_k, flat_v, req: RequestPlan, scale: float, softcap: float | None):
    """One request of the reference: q [T, Hq, D], its new k/v [T, Hkv, D], the flattened cache -> [T, Hq, D]."""
    t, kv_heads, d = q.shape[0], k_new.shape[1], k_new.shape[2]
    group = q.shape[1] // kv_heads
    k_b = _keys(flat_k, req.prefix, k_new).transpose(0, 1)  # [Hkv, L, D]
    v_b = _keys(flat_v, req.prefix, v_new).transpose(0, 1)
    q_b = q.float().transpose(0, 1).reshape(kv_heads, group, t, d)  # query head h reads KV head h // group
    o = torch.empty_like(q_b)
    for s in range(0, t, QUERY_BLOCK):
        e = min(t, s + QUERY_BLOCK)
        vis = None if req.visible is None else req.visible[s:e]
        keys = k_b.shape[1] if vis is None else int(vis.any(0).nonzero().max()) + 1  # the last key it sees
        o[:, :, s:e] = _attend(q_b[:, :, s:e], k_b[:, :keys], v_b[:, :keys], None if vis is None else vis[:, :keys],
                               scale, softcap)
    return o.view(kv_heads * group, t, d).transpose(0, 1).to(q.dtype)


def _attend(q, k, v, visible, scale: float, softcap: float | None) -> torch.Tensor:
    """q [Hkv, G, T, D] against k, v [Hkv, L, D]: one matmul-softmax-matmul, the group folded into the rows."""
    hkv, g, t, d = q.shape
    scores = q.reshape(hkv, g * t, d) @ k.transpose(1, 2) * scale
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    if visible is not None:
        scores.view(hkv, g, t, -1).masked_fill_(~visible, float("-inf"))
    return (scores.softmax(-1) @ v).view(hkv, g, t, d)


def _keys(flat_cache: torch.Tensor, prefix: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """fp32 [n_prefix + T, Hkv, D]: a request's cached keys (or values), then its new ones, in one copy."""
    n = len(prefix)
    keys = torch.empty(n + len(new), *new.shape[1:], dtype=flat_cache.dtype, device=new.device)
    torch.index_select(flat_cache, 0, prefix, out=keys[:n])
    keys[n:] = new
    return keys.float()
