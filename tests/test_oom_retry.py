"""Running out of GPU memory: the step is retried smaller and the requests survive.

No GPU here, so the fault is injected on the CPU: a forward pre-hook on the model's last
decoder layer (the first has already written its scratch k/v by then) raises a real
`torch.OutOfMemoryError` when the step is "too big" for an imagined memory limit: more
query tokens than a threshold, or a position past a threshold (a context too long to
attend over). Whatever the engine retries, outputs must equal plain greedy decoding and
every KV block must come back.
"""
from __future__ import annotations

import weakref

import pytest
import torch
from rich.console import Console

from conftest import AnswerDrafter, plain_case
from lookahead.drafters import Drafter, DraftTree, TreeBudget
from lookahead.engine import Engine, EngineConfig, SamplingParams
from lookahead.run.report import print_summary, summarize

MAX_NEW = 16
LONG = 96  # output tokens where a test needs many steps
VOCAB = 97  # the tiny models' (conftest)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny forwards: a second thread only adds overhead


def setup():
    return plain_case(model_seed=31, prompt_seed=32, n_prompts=5, min_len=3, max_len=30, max_new=MAX_NEW)


class ChainOracle(AnswerDrafter, Drafter):
    """Drafts the known answer as a chain as long as the budget allows, wrong after `right` nodes.

    Wrong nodes still cost memory; they make requests take more steps.
    """

    def __init__(self, answers, right: int = 1 << 30):
        super().__init__(answers)
        self.right = right

    def propose(self, request_id, budget: TreeBudget):
        truth = self.truth(request_id)[: min(budget.max_nodes, budget.max_depth)]
        chain = truth[: self.right] + [(t + 1) % VOCAB for t in truth[self.right:]]
        return DraftTree.chain(chain, [0.9] * len(chain))


class MemoryLimit:
    """Raises torch.OutOfMemoryError from the model's last layer when a step exceeds a limit.

    max_tokens     query tokens per forward at most
    max_position   position id at most (a longer context "does not fit")
    """

    def __init__(self, model, max_tokens: int = 1 << 30, max_position: int = 1 << 30):
        self.max_tokens, self.max_position = max_tokens, max_position
        self.raised = 0
        self.scratch: list[weakref.ref] = []  # the failed forwards' scratch buffers, to check they are freed
        self.handle = model.model.layers[-1].register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        tokens = args[0].shape[1]
        position = int(kwargs["position_ids"].max())
        if tokens > self.max_tokens or position > self.max_position:
            self.raised += 1
            self.scratch.append(weakref.ref(kwargs["lookahead_step"].scratch_k))
            raise torch.OutOfMemoryError(f"CUDA out of memory (injected: {tokens} query tokens, position {position})")

    def remove(self):
        self.handle.remove()


def run(engine: Engine, prompts, max_new: int = MAX_NEW, watch=lambda engine: None) -> dict:
    total = engine.cache.free_blocks()
    reqs = {rid: engine.add(rid, p, SamplingParams(max_new_tokens=max_new)) for rid, p in prompts.items()}
    steps = 0
    while engine.has_work():
        engine.step()
        watch(engine)
        steps += 1
        assert steps < 1000
    assert engine.cache.free_blocks() == total  # (d) no KV block leaked, whatever was retried
    assert not engine.running and not engine.waiting
    return reqs


def test_too_many_query_tokens_shrinks_trees_not_the_batch():
    model, prompts, answers = plain_case(model_seed=31, prompt_seed=33, n_prompts=4, min_len=3, max_len=9,
                                         max_new=LONG)
    limit = MemoryLimit(model, max_tokens=32)  # 4 prompts of < 9 tokens fit; 4 × (1 + 16) draft nodes do not
    try:
        engine = Engine(model, drafter=ChainOracle(answers, right=2),
                        config=EngineConfig(kv_cache_tokens=2048, max_batch_size=4, max_nodes=16, max_depth=16,
                                            controller="fixed"))
        batches = []
        reqs = run(engine, prompts, LONG, watch=lambda e: batches.append(e.memory.batch))
    finally:
        limit.remove()
    for rid, req in reqs.items():
        assert req.error is None, req.error
        assert req.output_ids == answers[rid], rid
    assert limit.raised > 0 and engine.oom_retries == limit.raised
    assert sum(s.oom_retries for s in engine.step_log) == limit.raised
    assert all(s.query_tokens <= limit.max_tokens for s in engine.step_log)
    assert set(batches) == {4}  # smaller trees were enough: the batch was never split
    assert any(s.draft_nodes > 0 for s in engine.step_log[-5:])  # still drafting after the OOMs
    # the shrink is remembered: far fewer failed forwards than steps
    assert limit.raised * 4 < len(engine.step_log)
    assert all(r() is None for r in limit.scratch)  # the failed attempts' scratch buffers were freed


def test_oom_with_empty_trees_splits_the_batch():
    model, prompts, answers = setup()
    limit = MemoryLimit(model, max_tokens=2)  # a prefill chunk of 2, or 2 requests decoding: no more
    try:
        engine = Engine(model, drafter=ChainOracle(answers),
                        config=EngineConfig(kv_cache_tokens=2048, max_batch_size=5, max_nodes=4, max_depth=4,
                                            prefill_chunk=2, controller="fixed"))
        seen, waited = {}, {}  # request id -> (kv_len, tokens) after the last step; steps in a row without a pass
        longest_wait = [0]

        def watch(engine):
            for r in engine.running:
                state = (r.kv_len, len(r.tokens))
                waited[r.id] = 0 if seen.get(r.id) != state else waited[r.id] + 1
                seen[r.id] = state
                longest_wait[0] = max(longest_wait[0], waited[r.id])

        reqs = run(engine, prompts, watch=watch)
    finally:
        limit.remove()
    for rid, req in reqs.items():
        assert req.error is None, req.error
        assert req.output_ids == answers[rid], rid
    assert limit.raised > 0
    assert max(s.requests for s in engine.step_log) <= 2 < len(prompts)  # verified in parts, all finished
    assert all(s.query_tokens <= limit.max_tokens for s in engine.step_log)
    assert longest_wait[0] <= len(prompts) - 1  # round robin (who waited goes first): no request starved


def test_a_request_that_never_fits_fails_alone():
    model, prompts, answers = setup()
    long_prompt = list(range(3, 83))  # 80 tokens: its positions pass the limit, no one else's do
    prompts = {**prompts, "long": long_prompt}
    assert max(len(p) for rid, p in prompts.items() if rid != "long") + MAX_NEW < 60
    limit = MemoryLimit(model, max_position=60)
    try:
        engine = Engine(model, drafter=ChainOracle(answers),
                        config=EngineConfig(kv_cache_tokens=2048, max_batch_size=8, max_nodes=4, max_depth=4,
                                            controller="fixed"))
        reqs = run(engine, prompts)
    finally:
        limit.remove()
    bad = reqs["long"]
    assert bad.done and bad.error == ("request long: out of GPU memory even with no draft tree and batch 1 "
                                      "(80 new tokens on 0 cached)")
    for rid, req in reqs.items():
        if rid != "long":
            assert req.error is None, (rid, req.error)
            assert req.output_ids == answers[rid], rid
    assert limit.raised >= 3  # the batch of 6 was halved down to the long request alone


def test_oom_halfway_through_commit_leaves_the_cache_clean():
    """The k cache written, then the v write runs out: the retry must not see the half-written slots."""
    model, prompts, answers = setup()
    engine = Engine(model, drafter=ChainOracle(answers, right=2),  # 3 tokens a step: later steps read earlier KV
                    config=EngineConfig(kv_cache_tokens=2048, max_batch_size=5, max_nodes=8, max_depth=8,
                                        controller="fixed"))
    write, calls = engine.cache.write, []

    def write_k_then_fail(blocks, offsets, k, v):
        calls.append(len(blocks))
        if len(calls) % 3 == 0:  # every third commit: k lands, v is torn (NaN), then the allocation fails
            engine.cache.k[:, blocks, offsets] = k
            engine.cache.v[:, blocks, offsets] = float("nan")
            raise torch.OutOfMemoryError("CUDA out of memory (injected in commit)")
        write(blocks, offsets, k, v)

    engine.cache.write = write_k_then_fail
    reqs = run(engine, prompts)
    for rid, req in reqs.items():
        assert req.error is None, req.error
        assert req.output_ids == answers[rid], rid
    assert engine.oom_retries > 0


def test_summary_reports_oom_retries(tiny_model_dir):
    from lookahead import Lookahead

    lm = Lookahead(str(tiny_model_dir), drafter="none")
    engine = lm.engine
    console = Console(record=True, width=100)

    print_summary(console, summarize([], [], 1.0, lm, "none", "float32"))
    assert "out-of-memory" not in console.export_text()  # nothing to say: no row

    engine.memory.failed_attempts = 3
    s = summarize([], [], 1.0, lm, "none", "float32")
    assert s["oom_retries"] == 3
    print_summary(console, s)
    assert "out-of-memory retries" in console.export_text()
