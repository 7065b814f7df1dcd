"""Verify: one forward of the target over every request's chain and tree, through the paged cache."""
from __future__ import annotations

import torch

from lookahead.engine.attention import StepAttention, attention_for_steps
from lookahead.engine.cpu_linear import invariant_rows
from lookahead.engine.kv_cache import PagedKVCache
from lookahead.engine.step import StepItem, Verified
from lookahead.engine.tree_inputs import build_step_inputs


def verify(model, cache: PagedKVCache, items: list[StepItem], linears, exact: bool) -> Verified:
    """Logits for every request's last chain token and tree nodes; the new tokens' KV in scratch.

    Nothing is written to the cache (commit does that), so a failed attempt leaves no trace.
    `linears` are the model's layers that `invariant_rows` switches for this forward when `exact`.
    """
    device = cache.k.device
    inputs = build_step_inputs([it.slice for it in items]).to(device)
    tables = [cache.blocks_of(it.request.id) for it in items]
    width = max(len(t) for t in tables)
    block_table = torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.int32, device=device)
    scratch_shape = (model.config.num_hidden_layers, inputs.input_ids.numel(), *cache.k.shape[3:])
    step = StepAttention(
        cache=cache, block_table=block_table, kv_lens=inputs.kv_lens, qo_indptr=inputs.qo_indptr,
        tree_mask=inputs.tree_mask, positions=inputs.position_ids, exact=exact,
        request_ids=[it.request.id for it in items],
        scratch_k=torch.empty(scratch_shape, dtype=cache.k.dtype, device=device),
        scratch_v=torch.empty(scratch_shape, dtype=cache.v.dtype, device=device),
    )
    with attention_for_steps(model), invariant_rows(linears, on=exact), torch.inference_mode():
        out = model(input_ids=inputs.input_ids[None], position_ids=inputs.position_ids[None],
                    lookahead_step=step, use_cache=False, logits_to_keep=inputs.logit_rows)
    logits = None if out.logits is None else out.logits[0].float()
    return Verified(inputs, logits, step.scratch_k, step.scratch_v, getattr(out, "greedy", None),
                    getattr(out, "topk", None))
