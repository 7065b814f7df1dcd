"""The tree-invariant attention paths, kernel by kernel: every row of a batched call equals, bit
for bit, the row the same path computes for that token decoded alone (its ancestors moved into
the cache, in other pages), and both stay close to the reference.

The CPU path (invariant_attention.py) in fp32 and bf16; the Triton kernel
(invariant_attention_triton.py) in fp32 and fp16, compiled with CUDA, else under
TRITON_INTERPRET=1 (conftest.py) at small shapes.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_tree_attention import DEVICE, TOL, make_batch, tree_masks
from lookahead.kernels.invariant_attention import tree_attention_invariant
from lookahead.kernels.invariant_attention_triton import plan_inputs, tree_attention_invariant_triton
from lookahead.kernels.tree_attention import prefix_rows, tree_attention_reference

PATHS = {
    "cpu-fp32": (tree_attention_invariant, torch.float32, "cpu"),
    "cpu-bf16": (tree_attention_invariant, torch.bfloat16, "cpu"),
    "triton-fp32": (tree_attention_invariant_triton, torch.float32, DEVICE),
    "triton-fp16": (tree_attention_invariant_triton, torch.float16, DEVICE),
}
# bf16 on the CPU path: scores and weights stay fp32, only the output is rounded to bf16.
CLOSE = {**TOL, torch.bfloat16: 1e-2}


def alone(args, i: int, **options):
    """Arguments for query row i decoded alone: its request's prefix and its ancestors (all but itself)
    in a fresh cache with a page order of its own, and i as the one new token."""
    q, k_new, v_new, k_cache, v_cache, block_table, kv_lens, qo_indptr, tree_mask, scale = args
    indptr = qo_indptr.tolist()
    b = int(np.searchsorted(indptr[1:], i, side="right"))
    s, e = indptr[b], indptr[b + 1]
    bits = [(int(tree_mask[i, j // 64]) >> (j % 64)) & 1 for j in range(e - s)]
    ancestors = [s + j for j in range(e - s) if bits[j] and s + j != i]
    page, kv_heads, d = k_cache.shape[1:]
    rows = prefix_rows(block_table[b].cpu(), int(kv_lens[b]), page).to(k_cache.device)
    n = len(rows) + len(ancestors)
    n_pages = -(-n // page) + 1
    caches = []
    for cache, new in ((k_cache, k_new), (v_cache, v_new)):
        keys = torch.cat([cache.reshape(-1, kv_heads, d)[rows], new[ancestors]])
        fresh = torch.full((n_pages * page, kv_heads, d), float("nan"), dtype=cache.dtype, device=cache.device)
        fresh[:n] = keys
        pages = fresh.view(n_pages, page, kv_heads, d)
        caches.append(torch.cat([pages[1:], pages[:1]]))  # page p of the request lives in slot p - 1
    table = torch.tensor([[(p - 1) % n_pages for p in range(n_pages)]], dtype=torch.int32, device=q.device)
    ints = dict(dtype=torch.int32, device=q.device)
    one = (q[i:i + 1], k_new[i:i + 1], v_new[i:i + 1], *caches, table, torch.tensor([n], **ints),
           torch.tensor([0, 1], **ints), torch.ones(1, 1, dtype=torch.int64, device=q.device), scale)
    if options.get("positions") is not None:
        options = dict(options, positions=options["positions"][i:i + 1])
    return one, options


@st.composite
def batches(draw):
    n_requests = draw(st.integers(1, 3))
    parents, kv_lens = [], []
    for _ in range(n_requests):
        n = draw(st.integers(1, 10))
        parents.append([draw(st.integers(-1, j - 1)) for j in range(n)])
        kv_lens.append(draw(st.sampled_from([0, 1, 37, 64, 130])))
    return parents, kv_lens


@pytest.mark.parametrize("path", list(PATHS))
@given(case=batches(), gemma=st.booleans(), seed=st.integers(0, 2**16))
@settings(deadline=None, derandomize=True, max_examples=12, suppress_health_check=[HealthCheck.too_slow])
def test_every_row_equals_the_token_decoded_alone(path, case, gemma, seed):
    kernel, dtype, device = PATHS[path]
    parents, kv_lens = case
    args = make_batch(tree_masks(parents), kv_lens, dtype=dtype, device=device, seed=seed)
    options = {}
    if gemma:  # a window shorter than most prefixes and a cap, with the engine's positions
        depth = [int(d) for mask in tree_masks(parents) for d in mask.sum(1) - 1]
        starts = [n for n, p in zip(kv_lens, parents) for _ in p]
        options = dict(window=40, softcap=2.0, positions=torch.tensor(np.add(starts, depth), device=device))
    out = kernel(*args, **options)
    torch.testing.assert_close(out.float(), tree_attention_reference(*args, **options).float(),
                               atol=CLOSE[dtype], rtol=CLOSE[dtype])
    for i in range(out.shape[0]):
        one, one_options = alone(args, i, **options)
        assert torch.equal(out[i], kernel(*one, **one_options)[0]), (path, i)


def test_ancestor_table_of_a_chain_then_a_tree():
    """A prefill chunk of 2 tokens, then two siblings under it: each row's k-th visible token."""
    masks = tree_masks([[-1, 0, 1, 1]])
    plan = plan_inputs(torch.zeros(1, 2, dtype=torch.int32), torch.tensor([3], dtype=torch.int32),
                       torch.tensor([0, 4], dtype=torch.int32), make_batch(masks, [3])[8].cpu(), page=16)
    assert plan.positions.tolist() == [3, 4, 5, 5]
    assert plan.ancestors[:, :4].tolist() == [[0, -1, -1, -1], [0, 1, -1, -1], [0, 1, 2, -1], [0, 1, 3, -1]]
    assert plan.n_splits == 1  # 2 pages of 16 plus 64 new: every position is in split 0
