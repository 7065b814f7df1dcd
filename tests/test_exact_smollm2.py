"""Exact by construction on the real SmolLM2, fp32 and bf16: speculative output == plain output token for token,
on bundled grammar, RAG and Ukrainian grammar requests, with every drafter, both controllers, batch 1 and 8."""
from __future__ import annotations

import pytest

from lookahead.drafters import RetrievalStore
from lookahead.drafters.mixer import make_drafter
from lookahead.engine import Engine, EngineConfig, SamplingParams
from lookahead.eval.workloads import load_workload
from lookahead.run.requests_io import RequestSpec, encode_prompt

pytestmark = pytest.mark.slow
N_NEW = 16
WORKLOADS = {"gec": "gec", "rag": "rag", "gec-ua": "gec"}  # workload -> task


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def case(request, smollm2):
    from lookahead.models import load_model

    lm = smollm2 if request.param == "float32" else load_model(None, dtype="bfloat16", device="cpu")
    prompts = {}
    for workload, task in WORKLOADS.items():
        for c in load_workload(workload, limit=2):
            prompts[c["id"]] = (task, encode_prompt(lm.tokenizer, RequestSpec(c["id"], messages=c["messages"])))
    engine = Engine(lm.model, lm.tokenizer, config=EngineConfig(kv_cache_tokens=8192, controller="off"))
    plain = {rid: r.output_ids for rid, r in
             engine.run({rid: ids for rid, (_, ids) in prompts.items()}, SamplingParams(max_new_tokens=N_NEW)).items()}
    return lm, prompts, plain


# Every drafter under the goodput controller at batch 8; both controllers and batch 1 with `auto`
# and prompt lookup (CI's time: the full cross product ran in 8 minutes and passed).
RUNS = [(name, "goodput", 8) for name in ("prompt-lookup", "suffix", "retrieval", "source", "auto")] + [
    ("auto", "fixed", 8), ("auto", "goodput", 1), ("prompt-lookup", "fixed", 1)]


@pytest.mark.parametrize("name,controller,batch", RUNS)
def test_speculative_equals_plain(case, name, controller, batch):
    lm, prompts, plain = case
    for task in ("gec", "rag"):
        mine = {rid: ids for rid, (t, ids) in prompts.items() if t == task}
        store = RetrievalStore() if name in ("retrieval", "auto") else None
        engine = Engine(lm.model, lm.tokenizer, drafter=make_drafter(name, store=store, task=task),
                        config=EngineConfig(kv_cache_tokens=8192, controller=controller, max_batch_size=batch))
        out = engine.run(mine, SamplingParams(max_new_tokens=N_NEW))
        for rid, r in out.items():
            assert r.output_ids == plain[rid], (rid, lm.model.dtype)
