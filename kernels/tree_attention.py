"""Tree attention over a paged KV cache: the plain-PyTorch reference (oracle and CPU path).

One call scores the query tokens of a batch of requests. Request b owns the rows
qo_indptr[b]:qo_indptr[b+1] of q/k_new/v_new (its step's new tokens: the uncached
committed tokens, then its draft tree). Query i of request b attends to
  * the committed prefix: cache positions [0, kv_lens[b]) through block_table[b], no mask;
  * new token j of the same request iff bit (j % 64) of tree_mask[i, j // 64] is set.

Shapes (ΣT = total new tokens, Hq = Hkv * group, W = mask words):
  q          [ΣT, Hq, D]             k_new, v_new [ΣT, Hkv, D]
  k_cache    [blocks, block, Hkv, D]  v_cache      same
  block_table int32 [B, max_blocks]   kv_lens      int32 [B]
  qo_indptr  int32 [B + 1]            tree_mask    int64 [ΣT, W]
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
    q, k_new, v_new, k_cache, v_cache, block_table, kv_lens, qo_indptr, tree_mask, scale: float
) -> torch.Tensor:
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
        # A query that sees everything needs no mask, and SDPA then takes its fused CPU path.
        mask = None if tree.all() else torch.cat([tree.new_ones(e - s, n_prefix), tree], dim=1)
        o = F.scaled_dot_product_attention(
            q[s:e].float().transpose(0, 1),  # [Hq, T, D]
            k.transpose(0, 1),
            v.transpose(0, 1),
            attn_mask=mask,
            scale=scale,
            enable_gqa=group > 1,
        )
        out[s:e] = o.transpose(0, 1).to(q.dtype)
    return out


def tree_attention(
    q, k_new, v_new, k_cache, v_cache, block_table, kv_lens, qo_indptr, tree_mask, scale: float
) -> torch.Tensor:
    """The Triton kernel (tree_attention_triton.py) for CUDA tensors, the reference elsewhere.

    LOOKAHEAD_TRITON_INTERPRET_TEST=1 sends CPU tensors to the kernel too (tests, with
    TRITON_INTERPRET=1). Triton is imported only when the kernel is used.
    """
    if q.is_cuda or os.environ.get("LOOKAHEAD_TRITON_INTERPRET_TEST") == "1":
        from .tree_attention_triton import tree_attention_triton

        return tree_attention_triton(q, k_new, v_new, k_cache, v_cache, block_table, kv_lens,
                                     qo_indptr, tree_mask, scale)
    return tree_attention_reference(q, k_new, v_new, k_cache, v_cache, block_table, kv_lens,
                                    qo_indptr, tree_mask, scale)
