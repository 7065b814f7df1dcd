"""Tree-invariant tree attention in Triton, beside its CPU twin (invariant_attention.py).

Same contract as `tree_attention_reference` (tree_attention.py), and the promise of
invariant_attention.py: a query's output row is bitwise independent of the other queries,
trees and requests in the call, and equal to what the kernel gives for the same token
decoded alone (one new token, its ancestors already in the cache).

How: one program per (new token, KV head, split), its rows the `group` query heads of that
KV head (padded to 16 rows for tl.dot). The token at position p reduces over key positions
0..p (from p - window + 1 with a window), in BLOCK_N-position blocks aligned at position 0,
in position order. Slot j of block n always holds position n * BLOCK_N + j: from the paged
cache when it is below the request's kv_len, else the new token that is the query's
ancestor at that position, read through an ancestor table. So a token sees the same keys in
the same slots, in the same order, whether its ancestors are cached or are nodes of the same
tree, and every tile has the same shape whatever the batch: the same floating-point
operations run. Splits cut positions at fixed multiples of SPLIT (never by batch or tree size);
the merge folds a token's own splits in position order. BLOCK_N and the pipeline depth follow the
GPU's shared memory (`plan_tiles`), never the batch, so invariance holds on every GPU.

The price against tree_attention_triton.py: a tree's nodes each read the shared prefix
(the other kernel loads a KV tile once per tile of nodes), and one token per program pads
the group to 16 rows.

The ancestor table: ancestors[i, k] is the request-local index of the new token that query
i sees at position kv_len + k (-1 where there is none). A new token's ancestors precede it,
one per position, so the k-th token that row i's mask shows sits at position kv_len + k.

Example (runs on the GPU, or on the CPU with TRITON_INTERPRET=1 set before importing):
>>> import torch                                                          # doctest: +SKIP
>>> q = k = v = torch.ones(2, 1, 4, device="cuda")                        # doctest: +SKIP
>>> cache = torch.zeros(1, 16, 1, 4, device="cuda")                       # doctest: +SKIP
>>> i32 = dict(dtype=torch.int32, device="cuda")                          # doctest: +SKIP
>>> tree_attention_invariant_triton(q, k, v, cache, cache, torch.zeros(1, 1, **i32),
...     torch.zeros(1, **i32), torch.tensor([0, 2], **i32),
...     torch.tensor([[0b01], [0b11]], device="cuda"), scale=0.5).shape  # doctest: +SKIP
torch.Size([2, 1, 4])
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import torch
import triton
import triton.language as tl

from .kernel_variant import KernelVariant
from .shared_memory import MAX_BLOCK_D, MAX_BLOCK_M, fit_pipeline, shared_memory_limit, tile_bytes
from .tree_attention import memoised, unpack_mask
from .tree_attention_triton import (_FP32_WARPS, _LOG2E, _fold_partial, _online_softmax_step, kernel_layout,
                                    merge_heads, powers_of_2)

# Positions per split: 1024 keys of 128 dims in bf16 are 256 KiB of K and V per program, and a
# 32k context still gives 32 splits per (token, KV head) to spread over the SMs. A multiple of
# every BLOCK_N (shared_memory.PIPELINES).
SPLIT = 1024
# KV tiles loaded per block: K and V, each from the cache and from the new tokens (tl.where picks).
_KV_LOADS = 4


@dataclass
class InvariantInputs:
    """The layer-invariant part of a step for the kernel (built once per step, on q's device).

    request    int32 [ΣT]: the request each new token belongs to
    positions  int32 [ΣT]: each new token's position (kv_len + depth unless the caller gave them)
    ancestors  int32 [ΣT, A]: request-local index of the token row i sees at position kv_len + k, or -1
    n_splits   splits in the grid: enough for the longest possible position
    """

    request: torch.Tensor
    positions: torch.Tensor
    ancestors: torch.Tensor
    n_splits: int


def plan_inputs(block_table, kv_lens, qo_indptr, tree_mask, page: int,
                positions: torch.Tensor | None = None) -> InvariantInputs:
    """Device tensor work only (no host sync): the request of each row, its position, its ancestors.

    >>> plan = plan_inputs(torch.zeros(1, 1, dtype=torch.int32), torch.tensor([5], dtype=torch.int32),
    ...     torch.tensor([0, 3], dtype=torch.int32), torch.tensor([[0b001], [0b011], [0b101]]), page=16)
    >>> plan.positions.tolist(), plan.ancestors[:, :2].tolist()  # a root and two children
    ([5, 6, 6], [[0, -1], [0, 1], [0, 2]])
    """
    n_tokens, words = tree_mask.shape
    device = tree_mask.device
    width = words * 64
    rows = torch.arange(n_tokens, device=device)
    request = torch.searchsorted(qo_indptr[1:].to(torch.int64), rows, right=True)
    seen = unpack_mask(tree_mask, width)  # [ΣT, A]
    rank = seen.long().cumsum(1) - 1
    anc = torch.full((n_tokens, width + 1), -1, dtype=torch.int64, device=device)
    slot = torch.where(seen, rank, torch.full_like(rank, width))  # hidden bits land in the spare column
    anc.scatter_(1, slot, torch.arange(width, device=device).expand(n_tokens, -1))
    kv = kv_lens.to(device, torch.int64)[request]
    if positions is None:
        positions = kv + rank[:, -1]
    capacity = block_table.shape[1] * page + width  # no position can reach this
    return InvariantInputs(request.to(torch.int32), positions.to(device, torch.int32),
                           anc[:, :width].to(torch.int32).contiguous(),
                           triton.cdiv(capacity, SPLIT))


@triton.jit
def _window_start(p_q, window, HAS_WINDOW: tl.constexpr):
    """The first key position a query at p_q sees."""
    if HAS_WINDOW:
        return tl.maximum(p_q - window + 1, 0)
    return p_q * 0


@triton.jit
def _invariant_partials(
    Q, K_NEW, V_NEW, K_CACHE, V_CACHE, BLOCK_TABLE, KV_LENS, QO_INDPTR, REQUEST, POSITIONS, ANCESTORS,
    O_PART, LSE_PART,  # [n_splits, ΣT, Hq, BLOCK_D] fp32, [n_splits, ΣT, Hq] fp32
    qk_scale, cap_log2, window,
    stride_qt, stride_qh,
    stride_nt, stride_nh,  # k_new and v_new share strides
    stride_cb, stride_cs, stride_ch,  # k_cache and v_cache share strides
    stride_bt, stride_at,
    stride_ps, stride_pt, stride_ph,
    stride_ls, stride_lt,
    HEAD_DIM: tl.constexpr, GROUP: tl.constexpr, PAGE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, SPLIT: tl.constexpr,
    HAS_WINDOW: tl.constexpr, SOFTCAP: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    i = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    split = tl.program_id(2)
    p_q = tl.load(POSITIONS + i)
    lo = _window_start(p_q, window, HAS_WINDOW)
    first = tl.maximum(lo // BLOCK_N, split * (SPLIT // BLOCK_N))
    last = tl.minimum(p_q // BLOCK_N + 1, (split + 1) * (SPLIT // BLOCK_N))
    if first >= last:
        return
    b = tl.load(REQUEST + i)
    q_start = tl.load(QO_INDPTR + b)
    kv_len = tl.load(KV_LENS + b)

    rows = tl.arange(0, BLOCK_M)
    row_ok = rows < GROUP
    head = h * GROUP + rows
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    q = tl.load(Q + i * stride_qt + head[:, None] * stride_qh + d[None, :],
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    cols = tl.arange(0, BLOCK_N)
    for n in range(first, last):
        pos = n * BLOCK_N + cols
        seen = (pos >= lo) & (pos <= p_q)
        cached = seen & (pos < kv_len)
        fresh = seen & (pos >= kv_len)
        anc = tl.load(ANCESTORS + i * stride_at + (pos - kv_len), mask=fresh, other=-1)
        fresh = fresh & (anc >= 0)
        page = tl.load(BLOCK_TABLE + b * stride_bt + pos // PAGE, mask=cached, other=0)
        off_c = page.to(tl.int64) * stride_cb + (pos % PAGE) * stride_cs + h * stride_ch
        off_n = (q_start + anc).to(tl.int64) * stride_nt + h * stride_nh
        c_mask = cached[:, None] & d_ok[None, :]
        n_mask = fresh[:, None] & d_ok[None, :]
        k = tl.where(c_mask, tl.load(K_CACHE + off_c[:, None] + d[None, :], mask=c_mask, other=0.0),
                     tl.load(K_NEW + off_n[:, None] + d[None, :], mask=n_mask, other=0.0))
        v = tl.where(c_mask, tl.load(V_CACHE + off_c[:, None] + d[None, :], mask=c_mask, other=0.0),
                     tl.load(V_NEW + off_n[:, None] + d[None, :], mask=n_mask, other=0.0))
        visible = (cached | fresh)[None, :] & row_ok[:, None]
        m_i, l_i, acc = _online_softmax_step(q, k, v, visible, m_i, l_i, acc, qk_scale, cap_log2,
                                             SOFTCAP, DOT_PRECISION)
    seen_any = l_i > 0
    o = acc / tl.where(seen_any, l_i, 1.0)[:, None]
    lse = tl.where(seen_any, m_i + tl.log2(tl.where(seen_any, l_i, 1.0)), float("-inf"))
    part = split.to(tl.int64)
    tl.store(LSE_PART + part * stride_ls + i * stride_lt + head, lse, mask=row_ok)
    tl.store(O_PART + part * stride_ps + i * stride_pt + head[:, None] * stride_ph + d[None, :], o,
             mask=row_ok[:, None] & d_ok[None, :])


@triton.jit
def _merge_own_splits(
    O_PART, LSE_PART, OUT, POSITIONS, window, n_heads,
    stride_ps, stride_pt, stride_ph,
    stride_ls, stride_lt,
    stride_ot, stride_oh,
    HEAD_DIM: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
    SPLIT: tl.constexpr, HAS_WINDOW: tl.constexpr,
):
    """out[i, heads] = sum_s 2^lse_s o_s / sum_s 2^lse_s over the splits that hold token i's keys, in order."""
    i = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    d = tl.arange(0, BLOCK_D)
    head_ok = head < n_heads
    p_q = tl.load(POSITIONS + i)
    s_lo = _window_start(p_q, window, HAS_WINDOW) // SPLIT
    s_hi = p_q // SPLIT + 1
    m = tl.full([BLOCK_H], float("-inf"), tl.float32)
    total = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, BLOCK_D], tl.float32)
    for s in range(s_lo, s_hi):
        lse = tl.load(LSE_PART + s * stride_ls + i * stride_lt + head, mask=head_ok, other=float("-inf"))
        o = tl.load(O_PART + s * stride_ps + i * stride_pt + head[:, None] * stride_ph + d[None, :],
                    mask=head_ok[:, None] & (d < HEAD_DIM)[None, :], other=0.0)
        m, total, acc = _fold_partial(m, total, acc, lse, o)
    out = acc / tl.where(total > 0, total, 1.0)[:, None]
    tl.store(OUT + i * stride_ot + head[:, None] * stride_oh + d[None, :],
             out.to(OUT.dtype.element_ty), mask=head_ok[:, None] & (d < HEAD_DIM)[None, :])


@dataclass(frozen=True)
class Tiles:
    """The invariant kernel's tiles for a model on a GPU (never for a batch or a tree)."""

    block_m: int  # rows: the group's query heads, padded to a power of 2 >= 16 for tl.dot
    block_n: int  # key positions per block; divides SPLIT
    block_d: int  # head dim padded to a power of 2, >= 16
    num_stages: int  # software pipeline depth of the key loop
    num_warps: int  # 4; fp32 inputs 8 (tree_attention_triton._FP32_WARPS)


def plan_tiles(group: int, head_dim: int, dtype: torch.dtype, shared_memory: int | None) -> Tiles:
    """The tiles, within `shared_memory` bytes per block (shared_memory.py; None, the interpreter: no
    limit): the key block and pipeline as shared_memory.PIPELINES lists them; a ValueError when none fits.

    >>> plan_tiles(group=4, head_dim=128, dtype=torch.bfloat16, shared_memory=None)
    Tiles(block_m=16, block_n=64, block_d=128, num_stages=2, num_warps=4)
    >>> plan_tiles(4, 128, torch.bfloat16, shared_memory=99 * 1024)  # Llama on an RTX 4090
    Tiles(block_m=16, block_n=32, block_d=128, num_stages=2, num_warps=4)
    """
    block_m = max(16, triton.next_power_of_2(group))
    block_d = max(16, triton.next_power_of_2(head_dim))
    fit = fit_pipeline(dtype.itemsize, block_m, block_d, _KV_LOADS, shared_memory)
    if fit is None:
        raise ValueError(f"no tree-invariant attention tiles of {block_m} rows x {block_d} dims in {dtype} "
                         f"fit {shared_memory} bytes of shared memory")
    return Tiles(block_m, fit[0], block_d, fit[1], _FP32_WARPS if dtype == torch.float32 else 4)


def partials_variant(tiles: Tiles, dtype: torch.dtype, head_dim: int, group: int, page: int,
                     window: bool, softcap: bool) -> KernelVariant:
    """The `_invariant_partials` a launch with these tiles compiles."""
    constexprs = dict(
        HEAD_DIM=head_dim, GROUP=group, PAGE=page,
        BLOCK_M=tiles.block_m, BLOCK_N=tiles.block_n, BLOCK_D=tiles.block_d, SPLIT=SPLIT,
        HAS_WINDOW=window, SOFTCAP=softcap,
        DOT_PRECISION="ieee" if dtype == torch.float32 else "tf32",
    )
    return KernelVariant(_invariant_partials, dtype, tuple(constexprs.items()), tiles.num_warps, tiles.num_stages,
                         tile_bytes(dtype.itemsize, tiles.block_m, tiles.block_n, tiles.block_d, _KV_LOADS,
                                    tiles.num_stages))


def merge_variant(dtype: torch.dtype, head_dim: int, block_d: int, block_h: int, window: bool) -> KernelVariant:
    """The `_merge_own_splits` for `block_h` heads per program (`merge_heads`); Triton's default
    warps and stages."""
    constexprs = dict(HEAD_DIM=head_dim, BLOCK_H=block_h, BLOCK_D=block_d, SPLIT=SPLIT, HAS_WINDOW=window)
    return KernelVariant(_merge_own_splits, dtype, tuple(constexprs.items()), 4, 3, None)


def launch_configs(shared_memory: int) -> list[KernelVariant]:
    """Every variant `tree_attention_invariant_triton` can launch on a GPU with `shared_memory` bytes
    per block: `plan_tiles` for every dtype x padded head dim (16 ... MAX_BLOCK_D) x padded group
    (16 ... MAX_BLOCK_M rows) x window x soft-cap, and the merge for every dtype x padded head dim x
    heads per program (1 ... 8) x window. Shapes with no tiles that fit (`plan_tiles` raises) are not
    launchable and are left out. As in tree_attention_triton.launch_configs, the constants that only
    index and mask take one value: head dim = block_d, group = block_m, page 16.

    >>> len(launch_configs(99 * 1024))
    340
    """
    variants = {}
    for dtype, block_d in product((torch.float32, torch.float16, torch.bfloat16), powers_of_2(16, MAX_BLOCK_D)):
        for rows in powers_of_2(16, MAX_BLOCK_M):
            try:
                tiles = plan_tiles(rows, block_d, dtype, shared_memory)
            except ValueError:
                continue
            for window, softcap in product((False, True), repeat=2):
                variants[partials_variant(tiles, dtype, block_d, rows, 16, window, softcap)] = None
        for block_h, window in product(powers_of_2(1, merge_heads(8)), (False, True)):
            variants[merge_variant(dtype, block_d, block_d, block_h, window)] = None
    return list(variants)


def tree_attention_invariant_triton(
    q, k_new, v_new, k_cache, v_cache, block_table, kv_lens, qo_indptr, tree_mask, scale: float,
    *, window: int | None = None, softcap: float | None = None, positions: torch.Tensor | None = None,
    plans: dict | None = None,
) -> torch.Tensor:
    """Arguments as `tree_attention_reference`; positions, when given, are the new tokens' own
    (a cached key at index j has position j). plans: the per-step memo for the ancestor table."""
    n_tokens, n_q_heads, head_dim = q.shape
    n_kv_heads = k_new.shape[1]
    group = n_q_heads // n_kv_heads
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    if n_tokens == 0:
        return out
    q, k_new, v_new = kernel_layout(q, k_new, v_new, k_cache, v_cache)
    page = k_cache.shape[1]
    inputs = memoised(plans, "invariant_triton", lambda: plan_inputs(
        block_table, kv_lens, qo_indptr, tree_mask, page, positions))
    block_table = block_table.to(torch.int32)
    tiles = plan_tiles(group, head_dim, q.dtype, shared_memory_limit(q.device))
    o_part = torch.empty(inputs.n_splits, n_tokens, n_q_heads, tiles.block_d, device=q.device, dtype=torch.float32)
    lse_part = torch.empty(inputs.n_splits, n_tokens, n_q_heads, device=q.device, dtype=torch.float32)
    partials_variant(tiles, q.dtype, head_dim, group, page, window is not None, softcap is not None).launch(
        (n_tokens, n_kv_heads, inputs.n_splits),
        q, k_new, v_new, k_cache, v_cache, block_table, kv_lens.to(torch.int32), qo_indptr.to(torch.int32),
        inputs.request, inputs.positions, inputs.ancestors, o_part, lse_part,
        scale * _LOG2E if softcap is None else scale / softcap,
        0.0 if softcap is None else softcap * _LOG2E,
        0 if window is None else window,
        q.stride(0), q.stride(1),
        k_new.stride(0), k_new.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        block_table.stride(0), inputs.ancestors.stride(0),
        o_part.stride(0), o_part.stride(1), o_part.stride(2),
        lse_part.stride(0), lse_part.stride(1),
    )
    block_h = merge_heads(n_q_heads)
    merge_variant(q.dtype, head_dim, tiles.block_d, block_h, window is not None).launch(
        (n_tokens, triton.cdiv(n_q_heads, block_h)),
        o_part, lse_part, out, inputs.positions, 0 if window is None else window, n_q_heads,
        o_part.stride(0), o_part.stride(1), o_part.stride(2),
        lse_part.stride(0), lse_part.stride(1),
        out.stride(0), out.stride(1),
    )
    return out
