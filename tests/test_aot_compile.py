"""The Triton kernels compiled ahead of time for sm_80, sm_86, sm_89 and sm_90, without a GPU.

kernels/aot.py lists every variant the launch planners can choose on each architecture (some 2,600)
and picks what CI compiles (`aot.ci_jobs`, about 120: the largest and smallest tiles of every kernel,
dtype size and tile dimension, every code option at a small shape). Each must compile, fit its
architecture's shared memory per block and use no more than its planner's estimate
(shared_memory.tile_bytes); variants of one shape must use the same shared memory, and sm_80 and
sm_89 must compile as sm_86 does, which is what lets the compiled ones stand for the rest. The
compiles run once, in a subprocess without TRITON_INTERPRET (conftest.py sets it here): about 2
minutes on 2 idle cores.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict

import pytest
import torch

from lookahead.kernels import aot
from lookahead.kernels.invariant_attention_triton import plan_tiles
from lookahead.kernels.shared_memory import SHARED_MEMORY_PER_BLOCK
from lookahead.kernels.tree_attention_triton import plan_launch

CAPABILITIES = (80, 86, 89, 90)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[tuple[int, str], dict]:
    """{(capability, variant name): aot.compile_variant's result or {"error": ...}} for aot.ci_jobs()."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-m", "lookahead.kernels.aot", "--processes", "2"], env=env,
                         cwd=tmp_path_factory.mktemp("aot"), capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    results = [json.loads(line) for line in run.stdout.splitlines()]
    return {(r["capability"], r["variant"]): r for r in results}


@pytest.fixture(scope="module")
def jobs() -> dict[tuple[int, str], aot.KernelVariant]:
    return {(c, v.name): v for c, v in aot.ci_jobs()}


def test_every_job_compiles(compiled, jobs):
    assert compiled.keys() == jobs.keys()
    failed = [f"sm_{c} {name}: {r['error']}" for (c, name), r in compiled.items() if "error" in r]
    assert not failed, "\n".join(failed)


def test_every_compiled_variant_fits_its_architecture(compiled):
    over = [f"sm_{c} {name}: {r['shared']} > {SHARED_MEMORY_PER_BLOCK[c]} bytes"
            for (c, name), r in compiled.items() if r.get("shared", 0) > SHARED_MEMORY_PER_BLOCK[c]]
    assert not over, "\n".join(over)


def test_the_estimate_bounds_every_compiled_variant(compiled, jobs):
    under = [f"sm_{c} {name}: compiled {r['shared']} > estimate {jobs[c, name].shared_estimate}"
             for (c, name), r in compiled.items()
             if jobs[c, name].shared_estimate is not None and r.get("shared", 0) > jobs[c, name].shared_estimate]
    assert not under, "\n".join(under)


def test_one_shape_one_footprint(compiled, jobs):
    """fp16 and bf16, the switches and the index constants change code, never a buffer."""
    footprints = defaultdict(set)
    for (c, name), r in compiled.items():
        footprints[c, aot.shape(jobs[c, name])].add(r.get("shared"))
    assert all(len(f) == 1 for f in footprints.values()), {k: f for k, f in footprints.items() if len(f) > 1}
    index_twins = [name for c, name in jobs if c == 86 and "HEAD_DIM=80 " in name]
    assert index_twins  # the check covered head dims below the tile


def test_sm80_and_sm89_compile_as_sm86(compiled):
    """Triton's passes give sm_80 and sm_89 sm_86's TTGIR (so its shared memory), and sm_89 its PTX;
    sm_89 has sm_86's shared memory, so its planners choose sm_86's variants."""
    assert [v.name for v in aot.variants(89)] == [v.name for v in aot.variants(86)]
    for capability, same in ((80, "ttgir"), (89, "ptx")):
        sample = {name: r for (c, name), r in compiled.items() if c == capability and (86, name) in compiled}
        assert len(sample) >= 4
        assert all(r[same] == compiled[86, name][same] and r["shared"] == compiled[86, name]["shared"]
                   for name, r in sample.items())
    # sm_80's largest tiles: compiled for sm_80 where sm_86 cannot hold them, else for sm_86.
    assert all((80, v.name) in compiled or (86, v.name) in compiled for v in aot.extremes(aot.variants(80)))


def test_every_choosable_variant_fits_by_its_estimate():
    """What CI does not compile: the planners only choose tiles whose estimate fits."""
    for capability in CAPABILITIES:
        chosen = aot.variants(capability)
        assert len(chosen) > 600
        assert all(v.shared_estimate <= SHARED_MEMORY_PER_BLOCK[capability] for v in chosen
                   if v.shared_estimate is not None)


def test_the_planners_shrink_tiles_that_do_not_fit():
    """The tiles that overflowed before the planners knew the architecture (compiled sizes, Triton 3.9)."""
    big_tree = dict(n_tokens=8 * 128, n_requests=8, n_kv_heads=8, group=1, n_sms=132)
    for capability, limit in SHARED_MEMORY_PER_BLOCK.items():
        # fp32, 128 rows x 256 dims, 64 keys, 2 stages: 295 KB everywhere.
        fp32 = plan_launch(head_dim=256, dtype=torch.float32, shared_memory=limit, **big_tree)
        assert (fp32.block_m, fp32.block_n, fp32.num_stages) != (128, 64, 2)
    # bf16, 128 x 256 at 64 keys: 115 KB on sm_86 (99 KB).
    bf16 = plan_launch(head_dim=256, dtype=torch.bfloat16, shared_memory=SHARED_MEMORY_PER_BLOCK[86], **big_tree)
    assert bf16.block_n < 64
    # The interpreter (no limit) keeps the largest tiles.
    assert plan_launch(head_dim=256, dtype=torch.float32, **big_tree).block_n == 64
    # The invariant kernel in bf16 at head dim 128 used 100 KB of sm_86's 99 with 64-key blocks.
    assert plan_tiles(4, 128, torch.bfloat16, SHARED_MEMORY_PER_BLOCK[86]).block_n == 32
    with pytest.raises(ValueError, match="fit"):  # 128 heads a KV head in fp32 at 256 dims: too big for sm_86
        plan_tiles(128, 256, torch.float32, SHARED_MEMORY_PER_BLOCK[86])
