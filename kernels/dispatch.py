"""Which tree-attention path a step runs, by device and `exact` (every path has the contract of
`tree_attention_reference` in tree_attention.py).

>>> import torch
>>> q = k = v = torch.ones(2, 1, 4)
>>> cache = torch.zeros(1, 16, 1, 4)
>>> args = (q, k, v, cache, cache, torch.zeros(1, 1, dtype=torch.int32), torch.zeros(1, dtype=torch.int32),
...         torch.tensor([0, 2], dtype=torch.int32), torch.tensor([[0b01], [0b11]]), 0.5)
>>> torch.equal(tree_attention(*args), tree_attention(*args, exact=False))  # all-ones: every path agrees
True
"""
from __future__ import annotations

import os

from .tree_attention import tree_attention_reference


def tree_attention(
    q, k_new, v_new, k_cache, v_cache, block_table, kv_lens, qo_indptr, tree_mask, scale: float,
    *, window: int | None = None, softcap: float | None = None, positions: torch.Tensor | None = None,
    plans: dict | None = None, exact: bool = True,
) -> torch.Tensor:
    """Which path runs:

      CUDA, exact       the tree-invariant Triton kernel (invariant_attention_triton.py)
      CUDA, not exact   the faster Triton kernel (tree_attention_triton.py), whose splits follow
                        the batch and tree sizes
      CPU, exact        the tree-invariant path (invariant_attention.py)
      CPU, not exact    this reference, which reduces a tree node's keys in another order than
                        plain decoding does

    LOOKAHEAD_TRITON_INTERPRET_TEST=1 sends CPU tensors to the Triton kernels too (tests, with
    TRITON_INTERPRET=1). Triton is imported only when a kernel is used. `plans` is the per-step
    memo of the layer-invariant work (see each path).
    """
    args = (q, k_new, v_new, k_cache, v_cache, block_table, kv_lens, qo_indptr, tree_mask, scale)
    options = dict(window=window, softcap=softcap, positions=positions)
    if q.is_cuda or os.environ.get("LOOKAHEAD_TRITON_INTERPRET_TEST") == "1":
        if exact:
            from .invariant_attention_triton import tree_attention_invariant_triton

            return tree_attention_invariant_triton(*args, **options, plans=plans)
        from .tree_attention_triton import tree_attention_triton

        return tree_attention_triton(*args, **options)
    if exact:
        from .invariant_attention import tree_attention_invariant

        return tree_attention_invariant(*args, **options, plans=plans)
    return tree_attention_reference(*args, **options, plans=plans)
