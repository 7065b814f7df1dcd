"""Our attention inside any transformers model, through `AttentionInterface` (no copied model code).

The model is run as a pure function of (input_ids, position_ids): it computes the
new tokens' q/k/v (RoPE applied) and hands them to `lookahead_attention`, which
keeps the new k/v in a scratch buffer (only accepted tokens reach the cache, at
commit) and attends over the paged cache plus the tree.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lookahead.kernels.tree_attention import tree_attention_reference

from .kv_cache import PagedKVCache

ATTENTION_NAME = "lookahead"


@dataclass
class StepAttention:
    """What every layer's attention needs for one verify pass.

    block_table int32 [B, max_blocks]   kv_lens int32 [B]   qo_indptr int32 [B + 1]
    tree_mask   int64 [ΣT, W]
    scratch_k, scratch_v [layers, ΣT, kv_heads, head_dim]: filled layer by layer
    """

    cache: PagedKVCache
    block_table: torch.Tensor
    kv_lens: torch.Tensor
    qo_indptr: torch.Tensor
    tree_mask: torch.Tensor
    scratch_k: torch.Tensor
    scratch_v: torch.Tensor


def _attention_backend():
    try:
        from lookahead.kernels.tree_attention import tree_attention  # Triton on CUDA, reference elsewhere
    except ImportError:
        return tree_attention_reference
    return tree_attention


def lookahead_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """query [1, Hq, ΣT, D], key/value [1, Hkv, ΣT, D] -> ([1, ΣT, Hq, D], None)."""
    step: StepAttention | None = kwargs.get("lookahead_step")
    if step is None:  # a plain transformers call (e.g. generate) on a model loaded with our attention
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout)
    if getattr(module, "sliding_window", None) or getattr(module.config, "attn_logit_softcapping", None):
        # Gemma-2/3 local layers and soft-capping change the scores; silently ignoring them would be wrong.
        raise NotImplementedError("sliding-window and soft-capped attention are not supported yet")
    layer = module.layer_idx
    k = key[0].transpose(0, 1)
    v = value[0].transpose(0, 1)
    step.scratch_k[layer] = k
    step.scratch_v[layer] = v
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    out = _attention_backend()(
        query[0].transpose(0, 1),
        k,
        v,
        step.cache.k[layer],
        step.cache.v[layer],
        step.block_table,
        step.kv_lens,
        step.qo_indptr,
        step.tree_mask,
        scale,
    )
    return out.unsqueeze(0), None


def register_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, lookahead_attention)
