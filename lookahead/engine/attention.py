"""Our attention inside any transformers model, through `AttentionInterface` (no copied model code).

The model is run as a pure function of (input_ids, position_ids): it computes the
new tokens' q/k/v (RoPE applied) and hands them to `lookahead_attention`, which
keeps the new k/v in a scratch buffer (only accepted tokens reach the cache, at
commit) and attends over the paged cache plus the tree.

Layer-specific attention comes in as the keyword arguments transformers hands every
attention backend, and goes on to the kernel: `sliding_window` (Gemma-2/3 local layers,
Mistral, Qwen with use_sliding_window) and `softcap` (Gemma-2). Taking them from the call
rather than from the config follows exactly what the model's own eager path does: Gemma-3
never passes `softcap`, so a softcap in its config has no effect there either.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from lookahead.kernels.dispatch import tree_attention

from lookahead.engine.kv_cache import PagedKVCache

ATTENTION_NAME = "lookahead"


@dataclass
class StepAttention:
    """What every layer's attention needs for one verify pass.

    block_table int32 [B, max_blocks]   kv_lens int32 [B]   qo_indptr int32 [B + 1]
    tree_mask   int64 [ΣT, W]           positions int64 [ΣT] (the position ids; sliding windows use them)
    scratch_k, scratch_v [layers, ΣT, kv_heads, head_dim]: filled layer by layer
    plans: the attention paths' layer-invariant work, done by the first layer (per window)
    """

    cache: PagedKVCache
    block_table: torch.Tensor
    kv_lens: torch.Tensor
    qo_indptr: torch.Tensor
    tree_mask: torch.Tensor
    positions: torch.Tensor
    scratch_k: torch.Tensor
    scratch_v: torch.Tensor
    exact: bool = True  # the tree-invariant paths (kernels/invariant_attention*.py)
    request_ids: list[str] = field(default_factory=list)  # [B] the step's requests, in qo_indptr's order
    plans: dict = field(default_factory=dict)


def lookahead_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """query [1, Hq, ΣT, D], key/value [1, Hkv, ΣT, D] -> ([1, ΣT, Hq, D], None)."""
    step: StepAttention | None = kwargs.get("lookahead_step")
    window, softcap = kwargs.get("sliding_window"), kwargs.get("softcap")
    if step is None:  # a plain transformers call (e.g. generate) on a model loaded with our attention
        # transformers builds no mask for a custom backend, so plain causal SDPA is all there is:
        # right unless a window actually cuts keys off or the scores are capped.
        if softcap is not None or (window is not None and key.shape[2] > window):
            raise NotImplementedError("plain transformers calls on sliding-window or soft-capped layers "
                                      "need attn_implementation='eager'")
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout)
    layer = module.layer_idx
    k = key[0].transpose(0, 1)
    v = value[0].transpose(0, 1)
    step.scratch_k[layer] = k
    step.scratch_v[layer] = v
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    out = tree_attention(  # Triton on CUDA, the CPU paths elsewhere (exact: the tree-invariant ones)
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
        window=window,
        softcap=softcap,
        positions=step.positions,
        plans=step.plans,
        exact=step.exact,
    )
    return out.unsqueeze(0), None


def register_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, lookahead_attention)


@contextmanager
def attention_for_steps(model):
    """The model's attention set to ours for the engine's own forwards only, as it was after.

    A config assignment (transformers sets it on the sub-configs too), cheap enough for every
    step; the model's plain calls in between run its own attention.
    """
    register_attention()
    before = model.config._attn_implementation
    model.config._attn_implementation = ATTENTION_NAME
    try:
        yield
    finally:
        model.config._attn_implementation = before
