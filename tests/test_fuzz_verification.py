"""Fuzzing tree verification: random batches of random trees against a brute force written from the spec.

1. build_step_inputs + the reference attention, on random batches (trees of 0..40 nodes with
   random parents, chains of 1..30 tokens so masks cross the 64-bit word, random KV lengths and
   scattered block tables), against a dense loop: every query attends to its request's cached
   prefix, plus (chain token) the chain up to itself or (tree node) the whole chain and the
   node's ancestors and itself.
2. Random trees (random shapes, duplicate tokens under one parent, tokens right or wrong)
   through the Engine on a tiny fp32 model: outputs equal plain greedy.

LOOKAHEAD_FULL_SOAK=1 runs 10x more examples.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import AnswerDrafter, plain_case
from lookahead.drafters import Drafter, DraftTree, TreeBudget
from lookahead.engine import Engine, EngineConfig, SamplingParams
from lookahead.kernels.tree_attention import tree_attention_reference
from lookahead.engine.tree_inputs import RequestSlice, build_step_inputs

FULL = os.environ.get("LOOKAHEAD_FULL_SOAK") == "1"
SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny forwards: a second thread only adds overhead


@st.composite
def trees(draw, max_nodes=40, vocab=50):
    n = draw(st.integers(0, max_nodes))
    parents = [draw(st.integers(-1, i - 1)) for i in range(n)]
    tokens = draw(st.lists(st.integers(0, vocab - 1), min_size=n, max_size=n))
    return DraftTree(np.array(tokens, np.int64), np.array(parents, np.int32), np.full(n, 0.5))


@st.composite
def request_slices(draw):
    tree = draw(trees())
    chain = draw(st.lists(st.integers(0, 49), min_size=1, max_size=draw(st.sampled_from([1, 3, 30]))))
    return RequestSlice(chain, draw(st.integers(0, 70)), tree)


def ancestors_or_self(parents: list[int], i: int) -> set[int]:
    out = set()
    while i >= 0:
        assert i not in out
        out.add(i)
        i = parents[i]
    return out


@given(st.lists(request_slices(), min_size=1, max_size=4), st.integers(1, 3), st.sampled_from([1, 4, 16]),
       st.integers(0, 2**31 - 1))
@settings(max_examples=300 if FULL else 40, **SETTINGS)
def test_step_inputs_and_reference_attention_match_brute_force(slices, group, block, seed):
    hkv, dim = 2, 8
    hq = hkv * group
    s = build_step_inputs(slices)

    # --- the flattened inputs, checked against the spec one token at a time
    ids, pos, rows = [], [], []
    allowed: list[list[int]] = []  # per query: indices (within its request) of new tokens it sees
    for r in slices:
        c, par = len(r.chain), r.tree.parents.tolist()
        base = len(ids)
        ids += list(r.chain) + r.tree.tokens.tolist()
        pos += [r.kv_len + j for j in range(c)]
        pos += [r.kv_len + c - 1 + len(ancestors_or_self(par, i)) for i in range(len(r.tree))]
        allowed += [list(range(j + 1)) for j in range(c)]
        allowed += [list(range(c)) + sorted(c + a for a in ancestors_or_self(par, i)) for i in range(len(r.tree))]
        rows += [base + c - 1 + i for i in range(len(r.tree) + 1)]
    assert s.input_ids.tolist() == ids
    assert s.position_ids.tolist() == pos
    assert s.logit_rows.tolist() == rows
    assert s.logit_indptr.tolist() == np.cumsum([0] + [len(r.tree) + 1 for r in slices]).tolist()
    indptr = s.qo_indptr.tolist()
    assert indptr == np.cumsum([0] + [len(r.chain) + len(r.tree) for r in slices]).tolist()
    assert s.kv_lens.tolist() == [r.kv_len for r in slices]
    for i, a in enumerate(allowed):  # the packed mask, bit by bit
        words = s.tree_mask[i].tolist()
        seen = [j for j in range(64 * len(words)) if (words[j // 64] >> (j % 64)) & 1]
        assert seen == a

    # --- attention: a scattered paged cache, then a dense float64 loop per query and head
    g = torch.Generator().manual_seed(seed)
    n = indptr[-1]
    q = torch.randn(n, hq, dim, generator=g)
    k_new, v_new = torch.randn(n, hkv, dim, generator=g), torch.randn(n, hkv, dim, generator=g)
    need = [-(-r.kv_len // block) for r in slices]
    n_blocks = sum(need) + 3
    k_cache = torch.randn(n_blocks, block, hkv, dim, generator=g)
    v_cache = torch.randn(n_blocks, block, hkv, dim, generator=g)
    perm = torch.randperm(n_blocks, generator=g).tolist()
    width = max(max(need), 1)
    table = torch.full((len(slices), width), n_blocks - 1, dtype=torch.int32)  # padding points anywhere
    for b, m in enumerate(need):
        table[b, :m] = torch.tensor(perm[:m], dtype=torch.int32)
        perm = perm[m:]
    scale = dim ** -0.5
    out = tree_attention_reference(q, k_new, v_new, k_cache, v_cache, table, s.kv_lens, s.qo_indptr,
                                   s.tree_mask, scale)

    expect = torch.empty(n, hq, dim, dtype=torch.float64)
    for b, r in enumerate(slices):
        lo = indptr[b]
        prefix_k = [k_cache[table[b, p // block], p % block] for p in range(r.kv_len)]
        prefix_v = [v_cache[table[b, p // block], p % block] for p in range(r.kv_len)]
        for i in range(lo, indptr[b + 1]):
            keys = torch.stack(prefix_k + [k_new[lo + j] for j in allowed[i]]).double()  # [L, Hkv, D]
            vals = torch.stack(prefix_v + [v_new[lo + j] for j in allowed[i]]).double()
            for h in range(hq):
                w = torch.softmax(keys[:, h // group] @ q[i, h].double() * scale, 0)
                expect[i, h] = w @ vals[:, h // group]
    torch.testing.assert_close(out.double(), expect, rtol=1e-5, atol=1e-5)


# ---- the engine with fuzzed trees -------------------------------------------------------------------
VOCAB = 97


def model_and_answers():
    """A tiny fp32 Llama, fixed prompts and their plain greedy outputs (computed once)."""
    return plain_case(model_seed=7, prompt_seed=8, n_prompts=4, min_len=2, max_len=40, max_new=20)


class FuzzDrafter(AnswerDrafter, Drafter):
    """Trees with random parents; each node's token is the true next token or noise, so every shape
    of partly right tree occurs (duplicates under one parent included)."""

    def __init__(self, answers, seed, max_nodes, p_right):
        super().__init__(answers)
        self.max_nodes, self.p_right = max_nodes, p_right
        self.rng = np.random.default_rng(seed)

    def propose(self, request_id, budget: TreeBudget) -> DraftTree:
        truth = self.truth(request_id)
        n = int(self.rng.integers(0, self.max_nodes + 1))
        parents, tokens, depth = [], [], []
        for i in range(n):
            p = int(self.rng.integers(-1, i))
            d = 1 if p < 0 else depth[p] + 1
            right = self.rng.random() < self.p_right and d <= len(truth)
            parents.append(p)
            depth.append(d)
            tokens.append(truth[d - 1] if right else int(self.rng.integers(0, VOCAB)))
        return DraftTree(np.array(tokens, np.int64), np.array(parents, np.int32), self.rng.uniform(0, 1, n))


@given(st.integers(0, 2**31 - 1), st.integers(0, 40), st.sampled_from([0.3, 0.7, 0.95]),
       st.integers(1, 4), st.sampled_from([4, 16]), st.sampled_from([3, 1024]))
@settings(max_examples=60 if FULL else 6, **SETTINGS)
def test_engine_with_fuzzed_trees_equals_plain_greedy(seed, max_nodes, p_right, batch, block, chunk):
    model, prompts, answers = model_and_answers()
    engine = Engine(model, drafter=FuzzDrafter(answers, seed, max_nodes, p_right),
                    config=EngineConfig(kv_cache_tokens=2048, max_batch_size=batch, block_size=block,
                                        prefill_chunk=chunk, max_nodes=40, max_depth=16, controller="fixed"))
    out = engine.run(prompts, SamplingParams(max_new_tokens=20))
    for rid in prompts:
        assert out[rid].error is None
        assert out[rid].output_ids == answers[rid], rid
    assert engine.cache.free_blocks() == 2048 // block
