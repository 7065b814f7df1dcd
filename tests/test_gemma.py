"""Gemma-2 and Gemma-3 through our attention: sliding-window layers and soft-capped scores.

The tiny models (conftest.tiny_model) have a local layer with a window of 8 and a global
layer; Gemma-2's scores are scaled up to where its cap of 2 bites. Most prompts here are
longer than the window. transformers' reference side runs eager attention: its SDPA path
drops the soft-cap (Gemma-2 declares no SDPA support).
"""
from __future__ import annotations

import pytest
import torch

from conftest import tiny_model
from lookahead.engine.attention import ATTENTION_NAME, StepAttention
from lookahead.engine import Engine, EngineConfig, SamplingParams
from lookahead.kernels.tree_attention import pack_mask
from lookahead.engine.kv_cache import PagedKVCache
from test_engine_equality import OracleDrafter, prompts

GEMMAS = ("gemma2", "gemma3")


def eager(model, fn):
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            return fn()
    finally:
        model.set_attn_implementation(ATTENTION_NAME)


def eager_greedy(model, prompt, n):
    ids = torch.tensor([prompt])
    out = eager(model, lambda: model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                                              do_sample=False))
    return out[0, len(prompt):].tolist()


def our_prefill_logits(model, ids, split):
    """Logits of a prompt prefilled through `lookahead_attention` in two causal chunks: the
    second attends to the first through the paged cache, so both key paths are exercised."""
    cfg = model.config
    cache = PagedKVCache(cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim, blocks=8, block_size=8)
    cache.reserve("r", len(ids))
    logits = []
    for lo, hi in ((0, split), (split, len(ids))):
        n = hi - lo
        scratch = (cfg.num_hidden_layers, n, cfg.num_key_value_heads, cfg.head_dim)
        step = StepAttention(cache=cache, block_table=torch.tensor([cache.blocks_of("r")], dtype=torch.int32),
                             kv_lens=torch.tensor([lo], dtype=torch.int32),
                             qo_indptr=torch.tensor([0, n], dtype=torch.int32),
                             tree_mask=pack_mask(torch.ones(n, n).tril().bool()), positions=torch.arange(lo, hi),
                             scratch_k=torch.empty(scratch), scratch_v=torch.empty(scratch))
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids[lo:hi]]), position_ids=torch.arange(lo, hi)[None],
                        lookahead_step=step, use_cache=False)
        cache.write(*cache.slots("r", torch.arange(lo, hi)), step.scratch_k, step.scratch_v)
        logits.append(out.logits[0])
    return torch.cat(logits)


@pytest.mark.parametrize("arch", GEMMAS)
def test_prefill_matches_eager_and_the_window_and_cap_matter(arch):
    model = tiny_model(arch)
    ids = torch.randint(3, 97, (40,), generator=torch.Generator().manual_seed(0)).tolist()
    ours = our_prefill_logits(model, ids, split=17)
    theirs = eager(model, lambda: model(torch.tensor([ids])).logits[0])
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)

    # The test has teeth: the same model without its window, or without its cap, differs
    # by far more than the tolerance above.
    attn = [layer.self_attn for layer in model.model.layers]
    model.config.sliding_window = attn[0].sliding_window = 10**6
    no_window = eager(model, lambda: model(torch.tensor([ids])).logits[0])
    assert (no_window - theirs).abs().max() > 0.1
    if arch == "gemma2":
        model.config.sliding_window = attn[0].sliding_window = 8
        for a in attn:
            a.attn_logit_softcapping = None
        no_cap = eager(model, lambda: model(torch.tensor([ids])).logits[0])
        assert (no_cap - theirs).abs().max() > 0.1


@pytest.mark.parametrize("arch", GEMMAS)
def test_plain_greedy_equals_eager_generate(arch):
    model = tiny_model(arch)
    ps = prompts(3)  # 5, 21 and 59 tokens
    # Batched, and prefill chunks of 7 so that chunks start inside and beyond the window.
    engine = Engine(model, config=EngineConfig(kv_cache_tokens=1024, max_batch_size=2, prefill_chunk=7,
                                               block_size=4))
    out = engine.run(ps, SamplingParams(max_new_tokens=16))
    for rid, p in ps.items():
        assert out[rid].output_ids == eager_greedy(model, p, 16), rid


@pytest.mark.parametrize("arch", GEMMAS)
def test_random_trees_are_lossless(arch):
    model = tiny_model(arch, seed=3)
    ps = prompts(2)  # 5 and 21 tokens
    plain = Engine(model, config=EngineConfig(kv_cache_tokens=2048)).run(ps, SamplingParams(max_new_tokens=16))
    answers = {rid: r.output_ids for rid, r in plain.items()}
    # Trees up to 10 deep are longer than the window: their deep nodes must not see the root.
    spec = Engine(model, drafter=OracleDrafter(answers, 97),
                  config=EngineConfig(kv_cache_tokens=2048, max_nodes=24, max_depth=10, controller="fixed"))
    out = spec.run(ps, SamplingParams(max_new_tokens=16))
    assert {rid: r.output_ids for rid, r in out.items()} == answers
    assert sum(len(r.output_ids) for r in out.values()) / sum(r.forwards for r in out.values()) > 1.5
