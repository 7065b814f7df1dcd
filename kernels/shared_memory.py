"""Shared memory per thread block: what each GPU architecture allows, and what an attention tile needs.

The Triton kernels' launch planners (`plan_launch` in tree_attention_triton.py, `plan_tiles` in
invariant_attention_triton.py) keep `tile_bytes` of the tiles they pick within the GPU's
`shared_memory_limit`; tests/test_aot_compile.py compiles their variants for sm_80, sm_86, sm_89
and sm_90 (aot.py says which) and checks that each compiled kernel uses no more than either.

An RTX 4090 (sm_89, 99 KiB) cannot hold bf16 K and V tiles of 64 keys x 256 dims for two pipeline
stages beside a 32-row query tile; 32-key tiles fit:
>>> limit = SHARED_MEMORY_PER_BLOCK[89]
>>> tile_bytes(elem_bytes=2, block_m=32, block_n=64, block_d=256, kv_loads=2, num_stages=2) > limit
True
>>> fit_pipeline(elem_bytes=2, block_m=32, block_d=256, kv_loads=2, limit=limit)
(32, 2)
"""
from __future__ import annotations

import functools

import torch

# The most shared memory one thread block may use (the opt-in maximum), in bytes, by compute
# capability (major * 10 + minor): CUDA C Programming Guide, "Technical Specifications per Compute
# Capability", row "Maximum amount of shared memory per thread block": 163, 99, 99 and 227 KB.
SHARED_MEMORY_PER_BLOCK = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}

# The largest tiles the planners plan on a GPU, so the largest tests/test_aot_compile.py compiles:
# 128 packed query rows (a 32-node tree at group 4 in the fast kernel, a group of 128 query heads
# per KV head in the invariant one) and head dims up to 256 (Gemma's, the largest of the models we run).
MAX_BLOCK_M = 128
MAX_BLOCK_D = 256

# (keys per KV tile, pipeline stages) from the most the kernels use down; a planner takes the first
# that fits. A second stage overlaps the next tile's loads with this tile's math, so the tile
# shrinks first; tl.dot needs 16 keys at least.
PIPELINES = ((64, 2), (32, 2), (16, 2), (16, 1))


def compute_capability(device: torch.device) -> int:
    """86 for an sm_86 GPU."""
    major, minor = torch.cuda.get_device_capability(device)
    return major * 10 + minor


@functools.cache  # asked at every launch; a device's answer never changes
def shared_memory_limit(device: torch.device) -> int | None:
    """The bytes one block may use on `device`: the table's value for the architectures CI compiles
    for, the device's own report for others; None off the GPU (the interpreter has no limit)."""
    if device.type != "cuda":
        return None
    capability = compute_capability(device)
    if capability in SHARED_MEMORY_PER_BLOCK:
        return SHARED_MEMORY_PER_BLOCK[capability]
    return torch.cuda.get_device_properties(device).shared_memory_per_block_optin


def tile_bytes(elem_bytes: int, block_m: int, block_n: int, block_d: int, kv_loads: int,
               num_stages: int) -> int:
    """An upper bound on the shared memory of one attention program (query tile [block_m, block_d],
    KV tiles [block_n, block_d], `kv_loads` tile loads per step), the sum of what can be live at once:

      num_stages * kv_loads * block_n * block_d * elem_bytes   the KV tiles the pipeline has in flight
      + block_m * block_d * elem_bytes                         the query tile, a dot operand
      + block_m * block_n * 4                                  the fp32 scores on their way to P @ V

    Triton reuses buffers whose lifetimes do not overlap, so a kernel often uses less (compiled for
    sm_80 to sm_90 with Triton 3.9, bf16 tiles of 16 x 128 use about half of this; 64 x 256 tiles on
    sm_90 use 0.91 of it). tests/test_aot_compile.py checks the bound on every variant.

    >>> tile_bytes(elem_bytes=2, block_m=16, block_n=64, block_d=128, kv_loads=2, num_stages=2)
    73728
    """
    return (num_stages * kv_loads * block_n * block_d * elem_bytes + block_m * block_d * elem_bytes
            + block_m * block_n * 4)


def fit_pipeline(elem_bytes: int, block_m: int, block_d: int, kv_loads: int,
                 limit: int | None) -> tuple[int, int] | None:
    """The first (block_n, num_stages) of PIPELINES whose tiles fit `limit`; None if none does, or if
    the tile is beyond MAX_BLOCK_M x MAX_BLOCK_D. No limit (None, the interpreter): the first."""
    if limit is not None and (block_m > MAX_BLOCK_M or block_d > MAX_BLOCK_D):
        return None
    for block_n, num_stages in PIPELINES:
        if limit is None or tile_bytes(elem_bytes, block_m, block_n, block_d, kv_loads, num_stages) <= limit:
            return block_n, num_stages
    return None
