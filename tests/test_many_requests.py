"""1,000 requests through the batched engine leave no KV block allocated and no request behind."""
from __future__ import annotations

import torch

from conftest import tiny_model
from lookahead.drafters import RetrievalStore
from lookahead.drafters.mixer import make_drafter
from lookahead.engine import Engine, EngineConfig, SamplingParams


def test_thousand_requests_free_every_block(one_thread):
    model = tiny_model(seed=7)
    engine = Engine(model, drafter=make_drafter("auto", store=RetrievalStore()),
                    config=EngineConfig(kv_cache_tokens=2048, block_size=8, max_batch_size=32, max_depth=4))
    total_blocks = engine.cache.free_blocks()
    g = torch.Generator().manual_seed(0)
    finished = 0
    for i in range(1000):
        prompt = torch.randint(3, 97, (int(torch.randint(2, 12, (1,), generator=g)),), generator=g).tolist()
        engine.add(f"r{i}", prompt * 2, SamplingParams(max_new_tokens=int(torch.randint(1, 5, (1,), generator=g))))
        if i % 25 == 24:  # arrivals keep coming while earlier requests decode
            finished += len(engine.step())
    while engine.has_work():
        finished += len(engine.step())
    assert finished == 1000
    assert engine.cache.free_blocks() == total_blocks
    assert not engine.running and not engine.waiting
