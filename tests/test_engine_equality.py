"""Lossless: our engine's greedy output equals transformers' greedy `generate`, with and without trees."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TINY_ARCHS, AnswerDrafter, tiny_model
from lookahead.drafters import Drafter, DraftTree, TreeBudget
from lookahead.engine import Engine, EngineConfig, SamplingParams


def hf_greedy(model, prompt, n):
    model.set_attn_implementation("sdpa")
    try:
        ids = torch.tensor([prompt])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False)
    finally:
        model.set_attn_implementation("lookahead")
    return out[0, len(prompt):].tolist()


class OracleDrafter(AnswerDrafter, Drafter):
    """Random trees that contain a correct prefix of the known answer of random length, plus noise.

    Losslessness must hold whatever the tree: right, wrong or partly right.
    """

    def __init__(self, answers: dict[str, list[int]], vocab: int, seed: int = 0):
        super().__init__(answers)
        self.vocab = vocab
        self.rng = np.random.default_rng(seed)

    def propose(self, request_id, budget: TreeBudget) -> DraftTree:
        good = self.truth(request_id)[: self.rng.integers(0, budget.max_depth + 1)]
        paths = [good] if good else []
        for _ in range(self.rng.integers(0, 4)):
            cut = self.rng.integers(0, len(good) + 1)
            paths.append(list(good[:cut]) + self.rng.integers(3, self.vocab, self.rng.integers(1, 4)).tolist())
        self.rng.shuffle(paths)
        return DraftTree.from_paths(paths, [[0.9] * len(p) for p in paths])


def prompts(n, seed=1, vocab=97):
    g = torch.Generator().manual_seed(seed)
    return {f"r{i}": torch.randint(3, vocab, (int(torch.randint(5, 60, (1,), generator=g)),), generator=g).tolist()
            for i in range(n)}


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_plain_equals_generate(arch):
    model = tiny_model(arch)
    ps = prompts(3)
    engine = Engine(model, config=EngineConfig(kv_cache_tokens=1024, max_batch_size=1))
    out = engine.run(ps, SamplingParams(max_new_tokens=24))
    for rid, p in ps.items():
        assert out[rid].output_ids == hf_greedy(model, p, 24)
        assert out[rid].forwards == len(out[rid].output_ids)  # plain: one token per pass


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_random_trees_are_lossless(arch):
    model = tiny_model(arch, seed=3)
    ps = prompts(4, seed=2)
    plain = Engine(model, config=EngineConfig(kv_cache_tokens=2048)).run(ps, SamplingParams(max_new_tokens=30))
    answers = {rid: r.output_ids for rid, r in plain.items()}
    spec = Engine(model, drafter=OracleDrafter(answers, 97),
                  config=EngineConfig(kv_cache_tokens=2048, max_nodes=24, max_depth=8, controller="fixed"))
    out = spec.run(ps, SamplingParams(max_new_tokens=30))
    for rid in ps:
        assert out[rid].output_ids == answers[rid]
    total = sum(len(r.output_ids) for r in out.values()) / sum(r.forwards for r in out.values())
    assert total > 1.5  # the oracle's correct prefixes were accepted


def test_batch_and_chunked_prefill_do_not_change_outputs():
    model = tiny_model(seed=5)
    ps = prompts(5, seed=4)
    alone = {rid: Engine(model, config=EngineConfig(kv_cache_tokens=512)).run({rid: p}, SamplingParams(max_new_tokens=20))[rid].output_ids
             for rid, p in ps.items()}
    batched = Engine(model, config=EngineConfig(kv_cache_tokens=1024, max_batch_size=3, prefill_chunk=7, block_size=4))
    out = batched.run(ps, SamplingParams(max_new_tokens=20))
    assert {rid: r.output_ids for rid, r in out.items()} == alone
    assert batched.cache.free_blocks() == 1024 // 4  # every block came back
