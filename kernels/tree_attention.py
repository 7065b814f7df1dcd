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

import os

import torch
import torch.nn.functional as F

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


def gather_prefix(cache: torch.Tensor, blocks: torch.Tensor, length: int) -> torch.Tensor:
    """[length, Hkv, D]: the first `length` cached positions of one request."""
    block = cache.shape[1]
    n_blocks = -(-length // block)
    return cache[blocks[:n_blocks].long()].reshape(-1, *cache.shape[2:])[:length]


def tree_attention_reference(
    q, k_new, v_new, k_cache, v_cache, block_table, kv_lens, qo_indptr, tree_mask, scale: float,
    *, window: int | None = None, softcap: float | None = None, positions: torch.Tensor | None = None,
) -> torch.Tensor:
    if window is not None and positions is None:
        raise ValueError("a sliding window needs the new tokens' positions")
    out = torch.empty_like(q)
    group = q.shape[1] // k_new.shape[1]
    indptr = qo_indptr.tolist()
    lens = kv_lens.tolist()
    for b in range(len(lens)):
        s, e, n_prefix = indptr[b], indptr[b + 1], lens[b]
        if e == s:
            continue
        k = torch.cat([gather_prefix(k_cache, block_table[b], n_prefix), k_new[s:e]]).float()
        v = torch.cat([gather_prefix(v_cache, block_table[b], n_prefix), v_new[s:e]]).float()
        tree = unpack_mask(tree_mask[s:e], e - s)
        mask = torch.cat([tree.new_ones(e - s, n_prefix), tree], dim=1)
        if window is not None:
            q_pos = positions[s:e].to(q.device, torch.int64)
            k_pos = torch.cat([torch.arange(n_prefix, device=q.device), q_pos])
            mask &= (q_pos[:, None] - k_pos[None, :]) < window
        q_b = q[s:e].float().transpose(0, 1)  # [Hq, T, D]
        k_b, v_b = k.transpose(0, 1), v.transpose(0, 1)  # [Hkv, L, D]
        if softcap is None:
            # A query that sees everything needs no mask, and SDPA then takes its fused CPU path.
            o = F.scaled_dot_product_attention(q_b, k_b, v_b, attn_mask=None if mask.all() else mask,
                                               scale=scale, enable_gqa=group > 1)
        else:  # SDPA cannot cap scores: spell the softmax out
            scores = q_b @ k_b.repeat_interleave(group, 0).transpose(1, 2) * scale
            scores = softcap * torch.tanh(scores / softcap)
            o = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v_b.repeat_interleave(group, 0)
        out[s:e] = o.transpose(0, 1).to(q.dtype)
    return out


def tree_attention(
    q, k_new, v_new, k_cache, v_cache, block_table, kv_lens, qo_indptr, tree_mask, scale: float,
    *, window: int | None = None, softcap: float | None = None, positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """The Triton kernel (tree_attention_triton.py) for CUDA tensors, the reference elsewhere.

    LOOKAHEAD_TRITON_INTERPRET_TEST=1 sends CPU tensors to the kernel too (tests, with
    TRITON_INTERPRET=1). Triton is imported only when the kernel is used.
    """
    args = (q, k_new, v_new, k_cache, v_cache, block_table, kv_lens, qo_indptr, tree_mask, scale)
    options = dict(window=window, softcap=softcap, positions=positions)
    if q.is_cuda or os.environ.get("LOOKAHEAD_TRITON_INTERPRET_TEST") == "1":
        from .tree_attention_triton import tree_attention_triton

        return tree_attention_triton(*args, **options)
    return tree_attention_reference(*args, **options)
