"""The Triton tree-attention kernel against the plain-PyTorch reference.

Without CUDA the kernel runs on the CPU under TRITON_INTERPRET=1 (set in conftest.py, before
any kernel module is imported; Triton reads it when it decorates the kernels), in fp32/fp16:
small shapes. With CUDA the same tests run the compiled kernel, and the `gpu` tests add
real 8B-style sizes in bf16.

Tolerances (atol = rtol):
  fp32 1e-5 at small sizes, 1e-4 over the 16k-key real sizes: both sides accumulate in
       fp32, in different orders; the GPU kernel multiplies fp32 in IEEE, not tf32;
  fp16 2e-3: the kernel rounds the softmax weights to fp16 before P @ V, and the output;
  bf16 2e-2: the same with an 8-bit mantissa (one rounding of a value ~1 is up to 4e-3).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lookahead.drafters import DraftTree
from lookahead.kernels import dispatch
from lookahead.kernels import tree_attention as ta
from lookahead.kernels import tree_attention_triton as tt
from lookahead.kernels.tree_attention import pack_mask, prefix_rows, tree_attention_reference
from lookahead.kernels.tree_attention_triton import plan_launch, tree_attention_triton

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def make_batch(masks, kv_lens, kv_heads=2, group=2, head_dim=16, page=16, dtype=torch.float32,
               seed=0, device=DEVICE):
    """Arguments for one call: request b has new tokens with bool mask masks[b] [T_b, T_b]
    and a committed prefix of kv_lens[b] tokens in shuffled pages. Cache slots that no
    request owns (spare pages, page tails past kv_len) hold NaN, so a stray read shows."""
    gen = torch.Generator().manual_seed(seed)
    hq = kv_heads * group
    n_pages = [-(-n // page) for n in kv_lens]
    total_pages = sum(n_pages) + 2
    k_cache = torch.full((total_pages, page, kv_heads, head_dim), float("nan"))
    v_cache = k_cache.clone()
    block_table = torch.zeros(len(kv_lens), max(1, max(n_pages)), dtype=torch.int32)
    free = torch.randperm(total_pages, generator=gen)
    for b, (n, length) in enumerate(zip(n_pages, kv_lens)):
        pages, free = free[:n], free[n:]
        block_table[b, :n] = pages
        for cache in (k_cache, v_cache):
            values = torch.full((n * page, kv_heads, head_dim), float("nan"))
            values[:length] = torch.randn(length, kv_heads, head_dim, generator=gen)
            cache[pages] = values.view(n, page, kv_heads, head_dim)
    sizes = [m.shape[0] for m in masks]
    n_tokens = sum(sizes)
    words = max(1, -(-max(sizes, default=1) // 64))
    tree_mask = torch.zeros(n_tokens, words, dtype=torch.int64)
    qo_indptr = torch.tensor([0, *np.cumsum(sizes)], dtype=torch.int32)
    for b, m in enumerate(masks):
        if len(m):
            packed = pack_mask(torch.as_tensor(m))
            tree_mask[qo_indptr[b]:qo_indptr[b + 1], :packed.shape[1]] = packed
    q = torch.randn(n_tokens, hq, head_dim, generator=gen)
    k_new = torch.randn(n_tokens, kv_heads, head_dim, generator=gen)
    v_new = torch.randn(n_tokens, kv_heads, head_dim, generator=gen)
    floats = [x.to(device, dtype) for x in (q, k_new, v_new, k_cache, v_cache)]
    ints = [x.to(device) for x in (block_table, torch.tensor(kv_lens, dtype=torch.int32),
                                     qo_indptr, tree_mask)]
    return (*floats, *ints, head_dim ** -0.5)


def tree_masks(parents_list):
    return [DraftTree(np.zeros(len(p), np.int64), np.array(p), np.ones(len(p))).ancestor_masks()
            for p in parents_list]


def causal(n):
    return np.tril(np.ones((n, n), bool))


def check(args, tol=None, *, num_splits=None, min_chunk=None, **options):
    """Kernel (with the given tuning) against the reference; `options` (window, softcap,
    positions) go to both."""
    out = tree_attention_triton(*args, num_splits=num_splits, min_chunk=min_chunk, **options)
    ref = tree_attention_reference(*args, **options)
    assert out.dtype == ref.dtype and out.shape == ref.shape
    tol = TOL[out.dtype] if tol is None else tol
    torch.testing.assert_close(out.float(), ref.float(), atol=tol, rtol=tol)
    return out


# A few fixed trees: a bushy one, a chain, a single node, one whose rows span two mask words.
BUSHY = [-1, 0, 0, 1, 1, 2, -1, 6, 3]
CHAIN5 = [-1, 0, 1, 2, 3]
WIDE70 = [-1] + [i // 2 for i in range(69)]


def test_kernel_really_runs_under_the_interpreter():
    if DEVICE == "cpu":
        assert type(tt._tree_attention_partials).__name__ == "InterpretedFunction"


@pytest.mark.parametrize("group", [1, 4, 8])
def test_several_trees_gqa(group):
    args = make_batch(tree_masks([BUSHY, CHAIN5, [-1]]), kv_lens=[37, 5, 64], kv_heads=2,
                      group=group, head_dim=24, seed=group)
    check(args, num_splits=3, min_chunk=16)


@pytest.mark.parametrize("head_dim,page", [(8, 16), (40, 32), (64, 16)])
def test_head_dims_and_pages(head_dim, page):
    args = make_batch(tree_masks([BUSHY, CHAIN5]), kv_lens=[70, 33], head_dim=head_dim, page=page)
    check(args, num_splits=2, min_chunk=16)


def test_default_plan_and_fp16():
    args = make_batch(tree_masks([BUSHY, [-1, 0]]), kv_lens=[50, 17], dtype=torch.float16)
    check(args)


def test_empty_prefix_and_requests_without_new_tokens():
    masks = tree_masks([[], BUSHY, [], CHAIN5, []])
    args = make_batch(masks, kv_lens=[12, 0, 40, 0, 0])
    check(args, num_splits=2, min_chunk=16)


def test_more_than_64_new_tokens_two_mask_words():
    # A 70-node tree plus a chunked-prefill request of 150 causal tokens (3 mask words).
    args = make_batch(tree_masks([WIDE70]) + [causal(150)], kv_lens=[20, 30], kv_heads=1, group=2)
    check(args, num_splits=2, min_chunk=16)


def test_chain_equals_causal_attention():
    prefix, n_new, kv_heads, group, d = 45, 7, 2, 4, 16
    args = make_batch(tree_masks([list(range(-1, n_new - 1))]), kv_lens=[prefix], kv_heads=kv_heads,
                      group=group, head_dim=d)
    q, k_new, v_new, k_cache, v_cache, block_table = args[:6]
    out = tree_attention_triton(*args, num_splits=3, min_chunk=16)
    # The whole sequence, prefix then chain, through causal SDPA; the last n_new rows must match.
    rows = prefix_rows(block_table[0], prefix, k_cache.shape[1])
    k = torch.cat([k_cache.reshape(-1, kv_heads, d)[rows], k_new])  # [L, Hkv, D]
    v = torch.cat([v_cache.reshape(-1, kv_heads, d)[rows], v_new])
    q_all = torch.cat([torch.randn(prefix, kv_heads * group, d, device=q.device), q])
    expect = F.scaled_dot_product_attention(
        q_all.transpose(0, 1), k.transpose(0, 1).repeat_interleave(group, 0),
        v.transpose(0, 1).repeat_interleave(group, 0), is_causal=True, scale=args[-1],
    ).transpose(0, 1)[prefix:]
    torch.testing.assert_close(out, expect, atol=1e-5, rtol=1e-5)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_trees(data):
    n_req = data.draw(st.integers(1, 3), label="requests")
    parents_list = []
    for _ in range(n_req):
        n = data.draw(st.integers(0, 12), label="nodes")
        parents_list.append([data.draw(st.integers(-1, i - 1)) for i in range(n)])
    kv_lens = data.draw(st.lists(st.integers(0, 80), min_size=n_req, max_size=n_req), label="kv_lens")
    group = data.draw(st.sampled_from([1, 2, 4]), label="group")
    page = data.draw(st.sampled_from([16, 32]), label="page")
    splits = data.draw(st.integers(1, 3), label="splits")
    if sum(len(p) for p in parents_list) == 0:
        parents_list[0] = [-1]
    args = make_batch(tree_masks(parents_list), kv_lens, group=group, page=page, head_dim=16)
    check(args, num_splits=splits, min_chunk=16)


def test_dispatcher(monkeypatch):
    """exact picks the tree-invariant path on either device; the CPU takes Triton only when told to."""
    from lookahead.kernels import invariant_attention as ia
    from lookahead.kernels import invariant_attention_triton as it

    args = make_batch(tree_masks([CHAIN5]), kv_lens=[9])
    calls = []
    for module, name in ((tt, "tree_attention_triton"), (it, "tree_attention_invariant_triton"),
                         (ia, "tree_attention_invariant")):
        monkeypatch.setattr(module, name, lambda *a, _name=name, plans=None, **kw:
                            calls.append(_name) or tree_attention_reference(*a, **kw))
    monkeypatch.setenv("LOOKAHEAD_TRITON_INTERPRET_TEST", "1")
    dispatch.tree_attention(*args, exact=False)
    dispatch.tree_attention(*args)
    assert calls == ["tree_attention_triton", "tree_attention_invariant_triton"]
    if DEVICE == "cpu":
        monkeypatch.delenv("LOOKAHEAD_TRITON_INTERPRET_TEST")
        dispatch.tree_attention(*args)
        dispatch.tree_attention(*args, exact=False)  # the reference itself: no call recorded
        assert calls[2:] == ["tree_attention_invariant"]


# ---- Gemma-style options: sliding window and soft-capped scores --------------------------


def tree_positions(masks, kv_lens):
    """Position ids of the new tokens: a node at depth d of request b sits at kv_lens[b] + d
    (a causal chunk's row i has depth i)."""
    return torch.cat([torch.as_tensor(n + np.asarray(m).sum(1) - 1, dtype=torch.int64).reshape(-1)
                      for m, n in zip(masks, kv_lens)])


def brute_force(args, masks, window, softcap, positions):
    """The same attention one query row at a time in float64, from the bool masks and the
    page table directly (shares no code with the reference)."""
    q, k_new, v_new, k_cache, v_cache, block_table, kv_lens, qo_indptr, _, scale = args
    q, k_new, v_new, k_cache, v_cache = (x.double() for x in (q, k_new, v_new, k_cache, v_cache))
    page, group = k_cache.shape[1], q.shape[1] // k_new.shape[1]
    out = torch.zeros_like(q)
    for b, m in enumerate(masks):
        s, n = int(qo_indptr[b]), int(kv_lens[b])
        for i in range(len(m)):
            keys, values, key_pos = [], [], []
            for c in range(n):
                page_id = int(block_table[b, c // page])
                keys.append(k_cache[page_id, c % page]), values.append(v_cache[page_id, c % page])
                key_pos.append(c)
            for j in range(len(m)):
                if m[i][j]:
                    keys.append(k_new[s + j]), values.append(v_new[s + j])
                    key_pos.append(int(positions[s + j]))
            qp = int(positions[s + i])
            keep = [window is None or qp - kp < window for kp in key_pos]
            kk = torch.stack([x for x, ok in zip(keys, keep) if ok]).repeat_interleave(group, 1)
            vv = torch.stack([x for x, ok in zip(values, keep) if ok]).repeat_interleave(group, 1)
            scores = torch.einsum("hd,khd->hk", q[s + i], kk) * scale
            if softcap is not None:
                scores = softcap * torch.tanh(scores / softcap)
            out[s + i] = torch.einsum("hk,khd->hd", scores.softmax(-1), vv)
    return out


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_reference_window_and_softcap_against_brute_force(data):
    n_req = data.draw(st.integers(1, 3), label="requests")
    parents_list = [[data.draw(st.integers(-1, i - 1)) for i in range(data.draw(st.integers(1, 10)))]
                    for _ in range(n_req)]
    masks = tree_masks(parents_list)
    if data.draw(st.booleans(), label="chunked prefill"):
        masks.append(causal(data.draw(st.integers(1, 20))))
    kv_lens = data.draw(st.lists(st.integers(0, 40), min_size=len(masks), max_size=len(masks)))
    window = data.draw(st.one_of(st.none(), st.integers(1, 24)), label="window")
    softcap = data.draw(st.one_of(st.none(), st.sampled_from([0.5, 2.0, 50.0])), label="softcap")
    args = make_batch(masks, kv_lens, group=data.draw(st.sampled_from([1, 2])), head_dim=8,
                      device="cpu")
    positions = tree_positions(masks, kv_lens)
    ref = tree_attention_reference(*args, window=window, softcap=softcap, positions=positions)
    expect = brute_force(args, masks, window, softcap, positions)
    torch.testing.assert_close(ref.double(), expect, atol=1e-5, rtol=1e-5)


def test_window_needs_positions():
    args = make_batch(tree_masks([CHAIN5]), kv_lens=[9])
    with pytest.raises(ValueError, match="positions"):
        tree_attention_reference(*args, window=4)
    with pytest.raises(ValueError, match="positions"):
        tree_attention_triton(*args, window=4)


@pytest.mark.parametrize("window,softcap", [(8, None), (None, 2.0), (1, 0.5)])
def test_kernel_window_and_softcap(window, softcap):
    # A tree after a long prefix (most prefix chunks lie outside the window and are skipped),
    # a chain after a short one, and a 40-token prefill chunk whose own keys leave the window.
    masks = tree_masks([BUSHY, CHAIN5]) + [causal(40)]
    kv_lens = [90, 5, 20]
    args = make_batch(masks, kv_lens, group=2, head_dim=16, seed=window or 0)
    check(args, window=window, softcap=softcap, positions=tree_positions(masks, kv_lens),
          num_splits=3, min_chunk=16)


def test_plan_splits_fill_the_gpu():
    decode = plan_launch(n_tokens=1, n_requests=1, n_kv_heads=8, group=4, head_dim=128, n_sms=132)
    assert (decode.block_m, decode.num_splits) == (16, 32)
    busy = plan_launch(n_tokens=32 * 64, n_requests=32, n_kv_heads=8, group=4, head_dim=128, n_sms=132)
    assert (busy.block_m, busy.num_splits) == (128, 1)
    odd = plan_launch(n_tokens=10, n_requests=2, n_kv_heads=4, group=7, head_dim=80, n_sms=132)
    assert odd.block_m == 64 and odd.block_d == 128  # 8 tokens x 7 heads -> 64 rows


def test_bench_smoke(tmp_path, capsys):
    from lookahead.eval.bench_kernel import main

    out = tmp_path / "bench.json"
    argv = ["--tiny", "--batch", "2", "--tree", "5", "--context", "40", "--json", str(out)]
    results = main(argv if DEVICE == "cuda" else ["--interpret", *argv])
    assert len(results) == 1 and results[0].max_abs_diff < 1e-4
    assert "| 2 | 5 | 40 |" in capsys.readouterr().out
    assert out.exists()


# ---- GPU, real sizes ------------------------------------------------------------------


def random_parents(n, rng):
    return [int(rng.integers(-1, i)) for i in range(n)]


@gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("batch,context,nodes", [(1, 16384, 1), (8, 4096, 64), (4, 3000, 33)])
def test_gpu_real_sizes(batch, context, nodes, dtype):
    rng = np.random.default_rng(batch)
    masks = tree_masks([random_parents(nodes, rng) for _ in range(batch)])
    args = make_batch(masks, [context - 7 * b for b in range(batch)], kv_heads=8, group=4,
                      head_dim=128, dtype=dtype, seed=batch)
    check(args, tol=1e-4 if dtype == torch.float32 else None)


@gpu
@needs_cuda
def test_gpu_chunked_prefill_bf16():
    # 300 causal new tokens after a 2k prefix, batch of 2 with a small tree beside it.
    args = make_batch([causal(300)] + tree_masks([BUSHY]), [2048, 513], kv_heads=8, group=4,
                      head_dim=128, dtype=torch.bfloat16)
    check(args)


@pytest.mark.parametrize("query_block", [1, 3, 128], ids=["row-by-row", "blocks", "one-block"])
def test_query_blocks_and_the_step_memo_match_brute_force(monkeypatch, query_block):
    """Long requests go in blocks of query rows, each reading the keys up to its last visible one;
    a plan memoised by the first layer serves the next ones."""
    monkeypatch.setattr(ta, "QUERY_BLOCK", query_block)
    masks = tree_masks([BUSHY, CHAIN5, []]) + [causal(9)]
    kv_lens = [30, 0, 12, 17]
    args = make_batch(masks, kv_lens, group=4, head_dim=8, device="cpu")
    positions = tree_positions(masks, kv_lens)
    plans = {}
    for window in (None, 6, None):
        ref = tree_attention_reference(*args, window=window, positions=positions, plans=plans)
        expect = brute_force(args, masks, window, None, positions)
        torch.testing.assert_close(ref.double(), expect, atol=1e-5, rtol=1e-5)
    assert set(plans) == {None, 6}
