"""End to end on the real SmolLM2-135M-Instruct (fp32, CPU): lossless against transformers' greedy."""
from __future__ import annotations

import pytest
import torch

from lookahead.drafters import RetrievalStore
from lookahead.drafters.mixer import make_drafter
from lookahead.engine import Engine, EngineConfig, SamplingParams
from lookahead.eval.workloads import load_workload
from lookahead.run.requests_io import RequestSpec, encode_prompt

N_NEW = 40


@pytest.fixture(scope="module")
def gec_prompts(smollm2):
    cases = load_workload("gec", limit=2)
    return {c["id"]: encode_prompt(smollm2.tokenizer, RequestSpec(c["id"], messages=c["messages"])) for c in cases}


@pytest.fixture(scope="module")
def plain(smollm2, gec_prompts):
    engine = Engine(smollm2.model, smollm2.tokenizer, config=EngineConfig(kv_cache_tokens=2048))
    return {rid: r.output_ids for rid, r in engine.run(gec_prompts, SamplingParams(max_new_tokens=N_NEW)).items()}


def test_plain_equals_transformers_generate(smollm2, gec_prompts, plain):
    model = smollm2.model
    model.set_attn_implementation("sdpa")
    # transformers as it ships: its SDPA, and its linear layers (the engine switches them only for its own forwards)
    try:
        for rid, ids in gec_prompts.items():
            x = torch.tensor([ids])
            ref = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=N_NEW, do_sample=False)
            assert plain[rid] == ref[0, len(ids):].tolist()
    finally:
        model.set_attn_implementation("lookahead")


@pytest.mark.parametrize("name", ["prompt-lookup", "suffix", "retrieval", "source", "auto"])
def test_every_drafter_is_lossless(smollm2, gec_prompts, plain, name):
    store = RetrievalStore() if name in ("retrieval", "auto") else None
    drafter = make_drafter(name, store=store, task="gec")
    engine = Engine(smollm2.model, smollm2.tokenizer, drafter=drafter,
                    config=EngineConfig(kv_cache_tokens=4096, max_nodes=32, max_depth=12, controller="fixed"))
    out = engine.run(gec_prompts, SamplingParams(max_new_tokens=N_NEW))
    assert {rid: r.output_ids for rid, r in out.items()} == plain
    tau = sum(len(r.output_ids) for r in out.values()) / sum(r.forwards for r in out.values())
    if name in ("prompt-lookup", "suffix", "auto"):
        assert tau > 2.0  # grammar correction copies its input
