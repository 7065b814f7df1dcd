"""Tree invariance, the property behind exact speculative output in every dtype.

For random batches of random trees over random prefix lengths, on tiny random Llama, Qwen2
and Gemma-3 models in fp32 and bf16: every row's logits in one verify step equal, bit for
bit, the logits plain decoding computes for the same path decoded alone (the request's
prompt prefilled alone, then the path's tokens fed one step at a time). Through the CPU
attention path in fp32 and bf16, and through the Triton kernel in fp32 (compiled with CUDA,
else under TRITON_INTERPRET=1, fewer examples); test_invariant_attention.py checks each
attention path alone, the Triton one in fp16 too.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TINY_ARCHS, tiny_model
from lookahead.drafters import DraftTree
from lookahead.engine import Engine, EngineConfig
from lookahead.engine.step import StepItem
from lookahead.engine.verify import verify

pytestmark = pytest.mark.usefixtures("one_thread")
SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow], max_examples=25)


@functools.lru_cache(maxsize=None)
def model_for(arch: str, dtype: torch.dtype):
    return tiny_model(arch).to(dtype)


class _Pending:
    """What verify reads of a request: its id and cached length."""

    def __init__(self, rid, kv_len):
        self.id, self.kv_len = rid, kv_len


class Stepper:
    """Forwards of the engine's verify stage over explicit slices, committing what the caller names."""

    def __init__(self, model):
        self.engine = Engine(model, config=EngineConfig(kv_cache_tokens=4096, block_size=16))
        self.kv: dict[str, int] = {}

    def add(self, rid: str, need: int) -> None:
        self.engine.cache.reserve(rid, need)
        self.kv[rid] = 0

    def step(self, items: list[tuple[str, list[int], DraftTree]]) -> list[torch.Tensor]:
        """items: (request, chain, tree); the chains are committed. Returns each request's logit rows."""
        step = [StepItem(_Pending(rid, self.kv[rid]), chain, tree) for rid, chain, tree in items]
        v = verify(self.engine.model, self.engine.cache, step, self.engine._linears, self.engine.config.exact)
        logits, sk, sv, inputs = v.logits, v.scratch_k, v.scratch_v, v.inputs
        indptr, starts = inputs.logit_indptr.tolist(), inputs.qo_indptr.tolist()
        for b, (rid, chain, _) in enumerate(items):
            rows = torch.arange(starts[b], starts[b] + len(chain))
            blk, off = self.engine.cache.slots(rid, torch.arange(self.kv[rid], self.kv[rid] + len(chain)))
            self.engine.cache.write(blk, off, sk[:, rows], sv[:, rows])
            self.kv[rid] += len(chain)
        return [logits[indptr[b]:indptr[b + 1]] for b in range(len(items))]


@st.composite
def requests(draw, vocab=97):
    prompt = draw(st.lists(st.integers(3, vocab - 1), min_size=1, max_size=draw(st.sampled_from([5, 70, 150]))))
    n = draw(st.integers(0, 12))
    parents = [draw(st.integers(-1, i - 1)) for i in range(n)]
    tokens = draw(st.lists(st.integers(3, vocab - 1), min_size=n, max_size=n))
    bonus = draw(st.integers(3, vocab - 1))
    return prompt, bonus, DraftTree(np.array(tokens, np.int64), np.array(parents, np.int32), np.full(n, 0.5))


def path_to(tree: DraftTree, i: int) -> list[int]:
    out = []
    while i >= 0:
        out.append(int(tree.tokens[i]))
        i = int(tree.parents[i])
    return out[::-1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("arch", TINY_ARCHS)
@given(batch=st.lists(requests(), min_size=1, max_size=3))
@settings(**SETTINGS)
def test_every_row_equals_its_path_decoded_alone(arch, dtype, batch):
    check_rows(model_for(arch, dtype), batch)


@pytest.mark.parametrize("arch", TINY_ARCHS)
@given(batch=st.lists(requests(), min_size=1, max_size=3))
@settings(**dict(SETTINGS, max_examples=3))
def test_through_the_triton_kernel(arch, batch):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOOKAHEAD_TRITON_INTERPRET_TEST", "1")
        check_rows(model_for(arch, torch.float32), batch)


def check_rows(model, batch):
    arch, dtype = model.config.model_type, model.dtype
    tree_mode = Stepper(model)
    for b, (prompt, _, tree) in enumerate(batch):
        tree_mode.add(f"r{b}", len(prompt) + len(tree) + 2)
    tree_mode.step([(f"r{b}", prompt, DraftTree.empty()) for b, (prompt, _, _) in enumerate(batch)])
    rows = tree_mode.step([(f"r{b}", [bonus], tree) for b, (_, bonus, tree) in enumerate(batch)])
    for b, (prompt, bonus, tree) in enumerate(batch):
        for i in range(-1, len(tree)):  # -1: the bonus token's own row
            path = [bonus] + (path_to(tree, i) if i >= 0 else [])
            plain = Stepper(model)
            plain.add("p", len(prompt) + len(path) + 1)
            plain.step([("p", prompt, DraftTree.empty())])
            for tok in path:
                (last,) = plain.step([("p", [tok], DraftTree.empty())])
            assert torch.equal(rows[b][i + 1], last[0]), (arch, dtype, len(prompt), i)
