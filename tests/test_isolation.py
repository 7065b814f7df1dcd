"""Isolation: whatever goes wrong while serving one request fails that request alone.

A drafter that raises in start, propose or update for one request id, or returns an invalid
tree for it (malformed parents, a token outside the vocabulary, not a tree at all): that
request finishes with Request.error set; the other requests of the same batch finish with
outputs equal to plain greedy; every KV block comes back.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import plain_case
from lookahead.drafters import Drafter, DraftTree, TreeBudget
from lookahead.engine import Engine, EngineConfig, SamplingParams

VOCAB = 97
BAD = "r2"


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny forwards: a second thread only adds overhead


def setup():
    return plain_case(model_seed=21, prompt_seed=22, n_prompts=5, min_len=3, max_len=30, max_new=16)


class FaultyDrafter(Drafter):
    """Oracle chains (the known answer, so good requests accept drafts) and one fault for BAD.

    fault: where BAD fails: "start", "propose", "update" (on its `after`-th call), or a bad tree.
    """

    def __init__(self, answers, fault: str, after: int = 2):
        self.answers, self.fault, self.after = answers, fault, after
        self.pos: dict[str, int] = {}
        self.calls = 0
        self.stopped: list[str] = []

    def start(self, request_id, prompt_ids):
        if request_id == BAD and self.fault == "start":
            raise RuntimeError("drafter start failed")
        self.pos[request_id] = 0

    def propose(self, request_id, budget: TreeBudget):
        truth = self.answers[request_id][self.pos[request_id]:][:4]
        if request_id == BAD:
            self.calls += 1
            if self.calls >= self.after:
                if self.fault == "propose":
                    raise RuntimeError("drafter propose failed")
                if self.fault == "bad-parents":  # a compiled drafter's bug: a node is its own parent
                    return DraftTree.unchecked(np.array([5, 6], np.int64), np.array([-1, 1], np.int32),
                                               np.ones(2, np.float32))
                if self.fault == "out-of-vocab":
                    return DraftTree.chain([VOCAB + 1000] + truth[:2])
                if self.fault == "not-a-tree":
                    return [5, 6]
        return DraftTree.chain(truth) if truth else DraftTree.empty()

    def update(self, request_id, accepted_ids):
        if request_id == BAD and self.fault == "update" and self.pos[request_id] > 0:
            raise RuntimeError("drafter update failed")
        self.pos[request_id] += len(accepted_ids)

    def stop(self, request_id):
        self.stopped.append(request_id)
        self.pos.pop(request_id, None)


@pytest.mark.parametrize("fault", ["start", "propose", "update", "bad-parents", "out-of-vocab", "not-a-tree"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_failing_request_fails_alone(fault, temperature):
    model, prompts, answers = setup()
    drafter = FaultyDrafter(answers, fault)
    engine = Engine(model, drafter=drafter, config=EngineConfig(kv_cache_tokens=2048, max_batch_size=8,
                                                                 controller="fixed"))
    total = engine.cache.free_blocks()
    reqs = {rid: engine.add(rid, p, SamplingParams(max_new_tokens=16, temperature=temperature if rid == BAD else 0.0))
            for rid, p in prompts.items()}
    finished, steps = [], 0
    while engine.has_work():
        finished += engine.step()
        steps += 1
        assert steps < 100
    bad = reqs[BAD]
    assert bad.done and bad.error is not None, fault
    assert "\n" not in bad.error
    for rid, req in reqs.items():
        if rid != BAD:
            assert req.error is None, (rid, req.error)
            assert req.output_ids == answers[rid], rid
            assert req.accepted > 0  # the good requests kept drafting after the failure
    assert sorted(r.id for r in finished) == sorted(reqs)
    assert engine.cache.free_blocks() == total
    assert sorted(drafter.stopped) == sorted(reqs) and not drafter.pos
    # the engine stays usable: a new request after the failure decodes correctly
    drafter.answers = {**answers, "again": answers["r0"]}
    again = engine.run({"again": prompts["r0"]}, SamplingParams(max_new_tokens=16))
    assert again["again"].output_ids == answers["r0"]


def test_cancelling_a_request_frees_its_blocks_at_once_and_leaves_the_others_exact():
    model, prompts, answers = setup()
    drafter = FaultyDrafter(answers, fault="none")
    engine = Engine(model, drafter=drafter, eos_token_ids=[], config=EngineConfig(kv_cache_tokens=4096, max_batch_size=2))
    free = engine.cache.free_blocks()
    reqs = {rid: engine.add(rid, ids, SamplingParams(max_new_tokens=16)) for rid, ids in prompts.items()}
    engine.step()
    running, waiting = engine.running[0].id, engine.waiting[-1].id
    held = engine.cache.free_blocks()
    assert engine.cancel(running) and engine.cache.free_blocks() > held and running in drafter.stopped
    assert engine.cancel(waiting) and not engine.cancel(waiting) and not engine.cancel("no-such-id")
    while engine.has_work():
        engine.step()
    assert engine.cache.free_blocks() == free
    for rid, req in reqs.items():
        if rid in (running, waiting):
            assert req.error == "cancelled"
        else:
            assert req.error is None and req.output_ids == answers[rid]
