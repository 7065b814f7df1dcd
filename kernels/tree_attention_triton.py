"""Tree attention over a paged KV cache in Triton, beside its reference (tree_attention.py).

Same contract as `tree_attention_reference` (read its docstring): queries [ΣT, Hq, D] of
several requests, each attending to its committed prefix (paged cache, no mask) and to the
new tokens of its own step under a per-query int64 ancestor bitmask. Callers go through
`tree_attention` in tree_attention.py, which sends CUDA tensors here.

How it runs (two launches):

  1. `_tree_attention_partials`, grid (query tiles, Hkv, num_splits + 1):
       * a query tile is BLOCK_Q new tokens of one request times the `group` query heads
         that share KV head h, packed as BLOCK_M = next_pow2(BLOCK_Q * group) rows, so each
         KV tile is loaded once for the whole group (GQA packing);
       * z < num_splits: split z of the request's committed prefix, no mask. Each request
         cuts its own kv_len into num_splits chunks of at least min_chunk tokens (flash-
         decoding), so a batch of 1 with a long context still yields up to num_splits * Hkv
         busy programs, and no host sync on kv_lens is needed (empty chunks exit);
       * z == num_splits: the tree block, the request's new tokens under the bitmask, in key
         tiles of BLOCK_N <= 64 so one tile reads one mask word per query; key tiles that no
         query of the tile may see are skipped before K/V are loaded (free causal skipping
         for chunked prefill).
     Every program writes its normalised partial output and log2-sum-exp (fp32).
  2. `_merge_partials`, grid (ΣT, Hq / 8): combine the num_splits + 1 partials by log-sum-exp.

Query tiles are found without a host sync: request b owns tile slots
[qo_indptr[b] // BLOCK_Q + b, qo_indptr[b + 1] // BLOCK_Q + b + 1), which is at least
ceil(T_b / BLOCK_Q) slots, and a program finds its request by binary search over those
starts (the same numbering vLLM's unified attention uses); spare slots exit at once. The
grid is therefore ΣT // BLOCK_Q + B tiles, known from shapes alone.

Gemma-style options (see the reference): with a sliding window each query tile only walks
the prefix keys [min position in the tile - window + 1, kv_len), so a 4k window over a 32k
context reads 4k keys, and that span, not kv_len, is what the splits cut; tree tiles test
the window beside the bitmask. Soft-capping applies cap * tanh(s / cap) to the scores. Both
are compile-time switches, so plain calls run the code they always did.

Rows that see no key at all (kv_len = 0 and an empty mask row) come out as zeros; the
reference gives NaN there. Draft trees never produce such rows (a node sees itself).

Tiles follow the GPU: `plan_launch` keeps a launch's shared memory (shared_memory.tile_bytes)
within its architecture's limit per block. Split counts are runtime arguments, so batch and tree
sizes reach the compiled kernel only through the packed rows; `launch_configs` lists every variant
the planner can launch, and tests/test_aot_compile.py compiles them ahead of time (aot.py).

Example (runs on the GPU, or on the CPU with TRITON_INTERPRET=1 set before importing):
>>> import torch                                                          # doctest: +SKIP
>>> q = k = v = torch.ones(2, 1, 4, device="cuda")                        # doctest: +SKIP
>>> cache = torch.zeros(1, 16, 1, 4, device="cuda")                       # doctest: +SKIP
>>> i32 = dict(dtype=torch.int32, device="cuda")                          # doctest: +SKIP
>>> tree_attention_triton(q, k, v, cache, cache, torch.zeros(1, 1, **i32),
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

_LOG2E = 1.4426950408889634

# Defaults reasoned from H100 sizes, not yet tuned on a GPU (none was at hand when written).
# A KV tile of 64 tokens x 128 dims in bf16 is 16 KiB for K and for V: large enough to
# stream at full bandwidth, small enough for 2 pipeline stages (shared_memory.PIPELINES
# starts there and shrinks it where the GPU's shared memory is smaller). MAX_BLOCK_M = 128
# packed query rows hold a 32-node tree at group 4 in one tile; bigger trees re-read the KV
# tile, mostly from L2 (the tiles of one request and KV head are neighbours in the grid).
_KV_LOADS = 2  # KV tiles loaded per step: K and V
# fp32 inputs multiply on CUDA cores (DOT_PRECISION "ieee"), each thread holding its share of the
# operands in registers: compiled for sm_86 (Triton 3.9), a 64-row x 64-key x 64-dim fp32 tile spills
# 3.8 KiB per thread on 4 warps and 0.7 KiB on 8, so fp32 launches take 8 warps.
_FP32_WARPS = 8
# Each prefix split writes and reads back one fp32 partial per packed row: 2 * rows * D * 4
# bytes against chunk * D * 2 * 2 bytes of bf16 K and V, a ratio of 2 * rows / chunk.
# Chunks of at least 4 * rows keep that overhead under half; decode (16 rows) is bounded
# by the 256 floor instead, where a chunk is still 128 KiB of KV per program.
_MIN_CHUNK = 256
_MIN_CHUNK_PER_ROW = 4
# Split the prefix until there are about this many programs per SM.
_PROGRAMS_PER_SM = 2
_MAX_SPLITS = 32


@triton.jit
def _find_request(qo_indptr_ptr, tile, n_requests, BLOCK_Q: tl.constexpr):
    """The last request b whose first tile slot qo_indptr[b] // BLOCK_Q + b is <= tile."""
    lo = tl.full([], 0, tl.int32)
    hi = lo + n_requests
    while lo < hi:
        mid = (lo + hi) // 2
        first = tl.load(qo_indptr_ptr + mid) // BLOCK_Q + mid
        if first <= tile:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1


@triton.jit
def _tanh(x):
    """tanh in fp32 from exp2 (libdevice.tanh has no interpreter twin).

    (1 - e^-2|x|) / (1 + e^-2|x|) loses the low bits of tiny |x| to cancellation (an absolute
    error of ~1e-7, which the cap multiplies back up), so below 1/8 use the odd Taylor series
    to x^7 instead: its error there is under 2e-10 relative.
    """
    a = tl.abs(x)
    t = tl.exp2(a * (-2.0 * 1.4426950408889634))
    big = (1.0 - t) / (1.0 + t)
    a2 = a * a
    small = a * (1.0 + a2 * (-1.0 / 3.0 + a2 * (2.0 / 15.0 + a2 * (-17.0 / 315.0))))
    y = tl.where(a < 0.125, small, big)
    return tl.where(x < 0, -y, y)


@triton.jit
def _online_softmax_step(q, k, v, visible, m_i, l_i, acc, qk_scale, cap_log2,
                         SOFTCAP: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Fold one KV tile into the running (max, sum, acc); scores are in log2 units.

    Without SOFTCAP qk_scale is scale * log2(e); with it, qk_scale is scale / cap and
    cap_log2 is cap * log2(e), so s = cap * tanh(scale * q.k / cap) in log2 units.
    """
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
    if SOFTCAP:
        s = _tanh(s) * cap_log2
    s = tl.where(visible, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    # A row that has seen nothing yet keeps m = -inf; shift by 0 there to avoid inf - inf.
    m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.exp2(s - m_shift[:, None])
    alpha = tl.exp2(m_i - m_shift)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
    return m_new, l_i * alpha + tl.sum(p, 1), acc


@triton.jit
def _tree_attention_partials(
    Q, K_NEW, V_NEW, K_CACHE, V_CACHE, BLOCK_TABLE, KV_LENS, QO_INDPTR, TREE_MASK,
    POSITIONS,  # int32 [ΣT], read only with HAS_WINDOW
    O_PART, LSE_PART,  # [num_splits + 1, ΣT, Hq, BLOCK_D] fp32, [num_splits + 1, ΣT, Hq] fp32
    qk_scale, cap_log2, window, n_requests, num_splits, min_chunk,
    stride_qt, stride_qh,
    stride_nt, stride_nh,  # k_new and v_new share strides
    stride_cb, stride_cs, stride_ch,  # k_cache and v_cache share strides
    stride_bt, stride_mt,
    stride_ps, stride_pt, stride_ph,
    stride_ls, stride_lt,
    HEAD_DIM: tl.constexpr, GROUP: tl.constexpr, PAGE: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    HAS_WINDOW: tl.constexpr, SOFTCAP: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    tile = tl.program_id(0)
    h = tl.program_id(1)
    split = tl.program_id(2)

    b = _find_request(QO_INDPTR, tile, n_requests, BLOCK_Q)
    q_start = tl.load(QO_INDPTR + b)
    n_new = tl.load(QO_INDPTR + b + 1) - q_start
    t0 = (tile - (q_start // BLOCK_Q + b)) * BLOCK_Q
    if t0 >= n_new:
        return

    # Packed rows: row r is new token t0 + r // GROUP, query head h * GROUP + r % GROUP.
    rows = tl.arange(0, BLOCK_M)
    t = t0 + rows // GROUP
    row_ok = (rows < BLOCK_Q * GROUP) & (t < n_new)
    tok = (q_start + t).to(tl.int64)
    head = h * GROUP + rows % GROUP
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    q = tl.load(Q + tok[:, None] * stride_qt + head[:, None] * stride_qh + d[None, :],
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    if HAS_WINDOW:
        q_pos = tl.load(POSITIONS + tok, mask=row_ok, other=0)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    cols = tl.arange(0, BLOCK_N)

    if split < num_splits:  # committed prefix, chunk `split`, no mask (but the window)
        kv_len = tl.load(KV_LENS + b)
        first = 0
        if HAS_WINDOW:  # keys older than the tile's earliest query's window are never loaded
            first = tl.maximum(tl.min(tl.where(row_ok, q_pos, kv_len + window), 0) - window + 1, 0)
        span = tl.maximum(kv_len - first, 0)
        chunk = tl.maximum(tl.cdiv(tl.cdiv(span, num_splits), BLOCK_N) * BLOCK_N, min_chunk)
        lo = first + split * chunk
        hi = tl.minimum(lo + chunk, kv_len)
        for start in range(lo, hi, BLOCK_N):
            pos = start + cols
            pos_ok = pos < hi
            visible = pos_ok[None, :]
            if HAS_WINDOW:
                visible = visible & ((q_pos[:, None] - pos[None, :]) < window)
            page = tl.load(BLOCK_TABLE + b * stride_bt + pos // PAGE, mask=pos_ok, other=0)
            off = page.to(tl.int64) * stride_cb + (pos % PAGE) * stride_cs + h * stride_ch
            kv_mask = pos_ok[:, None] & d_ok[None, :]
            k = tl.load(K_CACHE + off[:, None] + d[None, :], mask=kv_mask, other=0.0)
            v = tl.load(V_CACHE + off[:, None] + d[None, :], mask=kv_mask, other=0.0)
            m_i, l_i, acc = _online_softmax_step(q, k, v, visible, m_i, l_i, acc, qk_scale,
                                                 cap_log2, SOFTCAP, DOT_PRECISION)
    else:  # tree block: the request's new tokens under the ancestor bitmask
        for start in range(0, n_new, BLOCK_N):
            j = start + cols
            # BLOCK_N divides 64, so the whole key tile sits in mask word start // 64.
            word = tl.load(TREE_MASK + tok * stride_mt + start // 64, mask=row_ok, other=0)
            bit = (word[:, None] >> (j % 64).to(tl.int64)[None, :]) & 1
            visible = (bit != 0) & (j < n_new)[None, :]
            if HAS_WINDOW:
                k_pos = tl.load(POSITIONS + q_start + j, mask=j < n_new, other=0)
                visible = visible & ((q_pos[:, None] - k_pos[None, :]) < window)
            if tl.max(tl.max(visible.to(tl.int32), 1), 0) > 0:
                off = (q_start + j).to(tl.int64) * stride_nt + h * stride_nh
                kv_mask = (j < n_new)[:, None] & d_ok[None, :]
                k = tl.load(K_NEW + off[:, None] + d[None, :], mask=kv_mask, other=0.0)
                v = tl.load(V_NEW + off[:, None] + d[None, :], mask=kv_mask, other=0.0)
                m_i, l_i, acc = _online_softmax_step(q, k, v, visible, m_i, l_i, acc, qk_scale,
                                                     cap_log2, SOFTCAP, DOT_PRECISION)

    seen = l_i > 0
    o = acc / tl.where(seen, l_i, 1.0)[:, None]
    lse = tl.where(seen, m_i + tl.log2(tl.where(seen, l_i, 1.0)), float("-inf"))
    part = split.to(tl.int64)
    tl.store(LSE_PART + part * stride_ls + tok * stride_lt + head, lse, mask=row_ok)
    # Rows that saw nothing (an empty prefix chunk) skip the output write; the merge
    # ignores partials whose lse is -inf and never reads them.
    tl.store(O_PART + part * stride_ps + tok[:, None] * stride_pt + head[:, None] * stride_ph
             + d[None, :], o, mask=(row_ok & seen)[:, None] & d_ok[None, :])


@triton.jit
def _fold_partial(m, total, acc, lse, o):
    """Fold one partial (log2-sum-exp `lse` [H], normalised output `o` [H, D]) into a running merge."""
    m_new = tl.maximum(m, lse)
    m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m - m_shift)
    w = tl.exp2(lse - m_shift)
    return m_new, total * alpha + w, acc * alpha[:, None] + w[:, None] * o


@triton.jit
def _merge_partials(
    O_PART, LSE_PART, OUT, n_heads, n_parts,
    stride_ps, stride_pt, stride_ph,
    stride_ls, stride_lt,
    stride_ot, stride_oh,
    HEAD_DIM: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """out[tok, heads] = sum_s 2^lse_s o_s / sum_s 2^lse_s, folded one partial at a time."""
    tok = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    d = tl.arange(0, BLOCK_D)
    head_ok = head < n_heads
    m = tl.full([BLOCK_H], float("-inf"), tl.float32)
    total = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, BLOCK_D], tl.float32)
    for s in range(n_parts):
        lse = tl.load(LSE_PART + s * stride_ls + tok * stride_lt + head, mask=head_ok,
                      other=float("-inf"))
        used = lse > float("-inf")  # unwritten partials (empty prefix chunks) are never read
        o = tl.load(O_PART + s * stride_ps + tok * stride_pt + head[:, None] * stride_ph
                    + d[None, :], mask=used[:, None] & (d < HEAD_DIM)[None, :], other=0.0)
        m, total, acc = _fold_partial(m, total, acc, lse, o)
    out = acc / tl.where(total > 0, total, 1.0)[:, None]
    tl.store(OUT + tok * stride_ot + head[:, None] * stride_oh + d[None, :],
             out.to(OUT.dtype.element_ty), mask=head_ok[:, None] & (d < HEAD_DIM)[None, :])


@dataclass(frozen=True)
class LaunchPlan:
    """Tile sizes and prefix split for one call; chosen from shapes alone (no host sync)."""

    block_q: int  # new tokens per query tile
    block_m: int  # packed rows per tile = next_pow2(block_q * group), >= 16 for tl.dot
    block_n: int  # keys per KV tile; divides 64 (one mask word per tree tile)
    block_d: int  # head dim padded to a power of 2, >= 16
    num_tiles: int  # query-tile slots in the grid: ΣT // block_q + B
    num_splits: int  # prefix chunks per request; partial slot num_splits is the tree
    min_chunk: int  # shortest prefix chunk in tokens
    num_warps: int
    num_stages: int  # software pipeline depth of the KV loops


def plan_launch(n_tokens: int, n_requests: int, n_kv_heads: int, group: int, head_dim: int,
                n_sms: int, num_splits: int | None = None, min_chunk: int | None = None, *,
                dtype: torch.dtype = torch.bfloat16, shared_memory: int | None = None) -> LaunchPlan:
    """Pick tiles and splits. `num_splits`/`min_chunk` override the heuristic (tests do).

    `shared_memory` is the GPU's bytes per block (shared_memory.py; None, the interpreter: no
    limit). Tiles whose `tile_bytes` exceed it shrink: the KV tile and pipeline as
    shared_memory.PIPELINES lists them, then, if none fits, the query tile by halves; a ValueError
    when nothing fits.

    >>> p = plan_launch(n_tokens=8 * 64, n_requests=8, n_kv_heads=8, group=4, head_dim=128, n_sms=132)
    >>> p.block_q, p.block_m, p.num_tiles, p.num_splits, p.min_chunk
    (32, 128, 24, 3, 512)
    >>> plan_launch(1, 1, 8, 4, 128, n_sms=132).num_splits  # batch 1 decode: split the prefix
    32
    >>> p = plan_launch(8 * 64, 8, 8, 4, 256, n_sms=128, shared_memory=99 * 1024)  # Gemma on an RTX 4090
    >>> p.block_m, p.block_n, p.num_stages
    (128, 16, 1)
    """
    # Size the tile for the mean tree (ΣT / B is known without a sync): decode gets 16
    # packed rows (1 token x group), trees get up to MAX_BLOCK_M rows.
    mean_t = -(-n_tokens // max(n_requests, 1))
    block_q = max(1, min(triton.next_power_of_2(mean_t), MAX_BLOCK_M // group))
    block_d = max(16, triton.next_power_of_2(head_dim))
    while True:
        block_m = max(16, triton.next_power_of_2(block_q * group))
        fit = fit_pipeline(dtype.itemsize, block_m, block_d, _KV_LOADS, shared_memory)
        if fit is not None or block_q == 1:
            break
        block_q //= 2
    if fit is None:
        raise ValueError(f"no tree-attention tiles of {block_m} rows x {block_d} dims in {dtype} "
                         f"fit {shared_memory} bytes of shared memory")
    num_tiles = n_tokens // block_q + n_requests
    if num_splits is None:
        busy_tiles = max(1, -(-n_tokens // block_q)) * n_kv_heads
        num_splits = min(_MAX_SPLITS, -(-_PROGRAMS_PER_SM * n_sms // busy_tiles))
    if min_chunk is None:
        min_chunk = max(_MIN_CHUNK, _MIN_CHUNK_PER_ROW * block_m)
    return LaunchPlan(
        block_q=block_q, block_m=block_m, block_n=fit[0], block_d=block_d,
        num_tiles=num_tiles, num_splits=max(1, num_splits), min_chunk=min_chunk,
        # A 128 x 128 fp32 accumulator needs 8 warps to stay in registers, and so do fp32 inputs
        # (see _FP32_WARPS).
        num_warps=_FP32_WARPS if dtype == torch.float32 or block_m * block_d >= 128 * 128 else 4,
        num_stages=fit[1],
    )


def partials_variant(plan: LaunchPlan, dtype: torch.dtype, head_dim: int, group: int, page: int,
                     window: bool, softcap: bool) -> KernelVariant:
    """The `_tree_attention_partials` a launch with this plan compiles."""
    constexprs = dict(
        HEAD_DIM=head_dim, GROUP=group, PAGE=page,
        BLOCK_Q=plan.block_q, BLOCK_M=plan.block_m, BLOCK_N=plan.block_n, BLOCK_D=plan.block_d,
        HAS_WINDOW=window, SOFTCAP=softcap,
        # fp32 inputs would otherwise be multiplied in tf32 on the GPU (10-bit mantissa).
        DOT_PRECISION="ieee" if dtype == torch.float32 else "tf32",
    )
    return KernelVariant(_tree_attention_partials, dtype, tuple(constexprs.items()), plan.num_warps,
                         plan.num_stages, tile_bytes(dtype.itemsize, plan.block_m, plan.block_n,
                                                     plan.block_d, _KV_LOADS, plan.num_stages))


def merge_heads(n_q_heads: int) -> int:
    """Query heads per merge program. The merge reads (num_splits + 1) x D fp32 per query head;
    8 heads per program keep enough programs for a decode batch of 1 (Hq / 8 of them) without
    tiny loads."""
    return min(8, triton.next_power_of_2(n_q_heads))


def merge_variant(dtype: torch.dtype, head_dim: int, block_d: int, block_h: int) -> KernelVariant:
    """The `_merge_partials` for `block_h` heads per program; warps and stages are Triton's defaults."""
    return KernelVariant(_merge_partials, dtype, (("HEAD_DIM", head_dim), ("BLOCK_H", block_h),
                                                  ("BLOCK_D", block_d)), 4, 3, None)


def launch_configs(shared_memory: int) -> list[KernelVariant]:
    """Every variant `tree_attention_triton` can launch on a GPU with `shared_memory` bytes per block.

    A variant is what its launch compiles in: the dtype, the tiles (block_m, block_n, block_d, warps,
    stages) and the window and soft-cap switches. Batch and tree sizes reach the binary only through
    the packed rows (split counts are runtime arguments), so the planner is asked for every dtype
    x padded head dim (16 ... MAX_BLOCK_D) x packed rows (16 ... MAX_BLOCK_M) x window x soft-cap,
    and the merge for every dtype x padded head dim x heads per program (1 ... 8, `merge_heads`). The other
    compile-time constants only index and mask (HEAD_DIM below BLOCK_D, GROUP, BLOCK_Q, PAGE), so
    each variant takes one value of them: head dim = block_d, group 1, page 16.

    >>> variants = launch_configs(99 * 1024)
    >>> len(variants), max(v.shared_estimate or 0 for v in variants) <= 99 * 1024
    (292, True)
    """
    variants = {}
    for dtype, block_d in product((torch.float32, torch.float16, torch.bfloat16), powers_of_2(16, MAX_BLOCK_D)):
        for rows in powers_of_2(16, MAX_BLOCK_M):
            plan = plan_launch(rows, 1, 1, 1, block_d, n_sms=1, dtype=dtype, shared_memory=shared_memory)
            for window, softcap in product((False, True), repeat=2):
                variants[partials_variant(plan, dtype, block_d, 1, 16, window, softcap)] = None
        for block_h in powers_of_2(1, merge_heads(8)):
            variants[merge_variant(dtype, block_d, block_d, block_h)] = None
    return list(variants)


def powers_of_2(lo: int, hi: int) -> list[int]:
    """Powers of 2 from lo to hi."""
    return [1 << e for e in range(lo.bit_length() - 1, hi.bit_length())]


def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4  # the interpreter: a few splits, enough to exercise the split path


def kernel_layout(q, k_new, v_new, k_cache, v_cache):
    """q, k_new, v_new as the kernels index them: the last dim with stride 1, K and V with one set of
    strides; anything else (rare: the engine passes transposed views with a contiguous last dim) is copied."""
    q = q if q.stride(-1) == 1 else q.contiguous()
    if k_new.stride() != v_new.stride() or k_new.stride(-1) != 1:
        k_new, v_new = k_new.contiguous(), v_new.contiguous()
    assert k_cache.stride() == v_cache.stride() and k_cache.stride(-1) == 1, \
        "k_cache and v_cache need equal strides and a contiguous last dim"
    return q, k_new, v_new


def tree_attention_triton(
    q, k_new, v_new, k_cache, v_cache, block_table, kv_lens, qo_indptr, tree_mask, scale: float,
    *, window: int | None = None, softcap: float | None = None, positions: torch.Tensor | None = None,
    num_splits: int | None = None, min_chunk: int | None = None,
) -> torch.Tensor:
    """The Triton kernel; arguments as `tree_attention_reference`, plus tuning overrides."""
    if window is not None and positions is None:
        raise ValueError("a sliding window needs the new tokens' positions")
    n_tokens, n_q_heads, head_dim = q.shape
    n_kv_heads = k_new.shape[1]
    group = n_q_heads // n_kv_heads
    n_requests = kv_lens.shape[0]
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)  # contiguous, whatever q's layout
    if n_tokens == 0:
        return out
    q, k_new, v_new = kernel_layout(q, k_new, v_new, k_cache, v_cache)
    block_table = block_table.to(torch.int32)
    kv_lens = kv_lens.to(torch.int32)
    qo_indptr = qo_indptr.to(torch.int32)
    tree_mask = tree_mask.to(torch.int64)
    # Without a window the kernel never reads POSITIONS; any int32 tensor fills the slot.
    positions = qo_indptr if window is None else positions.to(device=q.device, dtype=torch.int32)

    plan = plan_launch(n_tokens, n_requests, n_kv_heads, group, head_dim, _sm_count(q.device),
                       num_splits, min_chunk, dtype=q.dtype, shared_memory=shared_memory_limit(q.device))
    n_parts = plan.num_splits + 1
    o_part = torch.empty(n_parts, n_tokens, n_q_heads, plan.block_d, device=q.device,
                         dtype=torch.float32)
    lse_part = torch.empty(n_parts, n_tokens, n_q_heads, device=q.device, dtype=torch.float32)

    partials_variant(plan, q.dtype, head_dim, group, k_cache.shape[1], window is not None,
                     softcap is not None).launch(
        (plan.num_tiles, n_kv_heads, n_parts),
        q, k_new, v_new, k_cache, v_cache, block_table, kv_lens, qo_indptr, tree_mask, positions,
        o_part, lse_part,
        scale * _LOG2E if softcap is None else scale / softcap,
        0.0 if softcap is None else softcap * _LOG2E,
        0 if window is None else window, n_requests, plan.num_splits, plan.min_chunk,
        q.stride(0), q.stride(1),
        k_new.stride(0), k_new.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        block_table.stride(0), tree_mask.stride(0),
        o_part.stride(0), o_part.stride(1), o_part.stride(2),
        lse_part.stride(0), lse_part.stride(1),
    )
    block_h = merge_heads(n_q_heads)
    merge_variant(q.dtype, head_dim, plan.block_d, block_h).launch(
        (n_tokens, triton.cdiv(n_q_heads, block_h)),
        o_part, lse_part, out, n_q_heads, n_parts,
        o_part.stride(0), o_part.stride(1), o_part.stride(2),
        lse_part.stride(0), lse_part.stride(1),
        out.stride(0), out.stride(1),
    )
    return out
