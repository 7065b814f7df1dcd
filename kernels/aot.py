"""Ahead-of-time compiles of the Triton kernels' variants for a GPU architecture, without a GPU.

`variants(capability)` lists what the planners can launch on an architecture (each kernel module's
`launch_configs` at its shared memory per block), `compile_variant` compiles one for it with Triton
down to the cubin and returns the shared memory it uses, `ci_jobs` is what tests/test_aot_compile.py
compiles, and `main` compiles in parallel and prints one JSON line a variant:

    python -m lookahead.kernels.aot                 # what CI compiles (about 120 variants)
    python -m lookahead.kernels.aot --all 86 89     # every variant of sm_86 and sm_89

TRITON_INTERPRET must be unset when the kernel modules are imported: the interpreter replaces the
@triton.jit functions by ones that cannot be compiled (the test suite sets it, so the test runs
`main` in a process of its own).

The signature is the launch's: the kernels name their tensors in capitals; the model's tensors carry
its dtype, the others the fixed types of POINTERS (a new tensor argument has to be added there).
Every pointer is 16-byte aligned and every stride a multiple of 16 elements, what contiguous tensors
with head dims that are multiples of 16 give Triton to specialise on: the most it can vectorise and
pipeline, so the most shared memory. The other integers compile unspecialised (Triton also
specialises one equal to 1 or a multiple of 16; that only folds constants).

>>> v = next(v for v in variants(86) if v.kernel.__name__ == "_merge_partials")
>>> signature(v)["OUT"], signature(v)["n_parts"], signature(v)["BLOCK_D"]
('*fp32', 'i32', 'constexpr')
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import re
import time
from dataclasses import replace

import torch
import triton
from triton.backends.compiler import GPUTarget

from . import invariant_attention_triton, tree_attention_triton
from .kernel_variant import KernelVariant
from .shared_memory import SHARED_MEMORY_PER_BLOCK

# Tensor arguments of a fixed type; the others hold the model's tensors (q, k, v, the caches, the output).
POINTERS = {"O_PART": "fp32", "LSE_PART": "fp32", "TREE_MASK": "i64", "BLOCK_TABLE": "i32",
            "KV_LENS": "i32", "QO_INDPTR": "i32", "POSITIONS": "i32", "REQUEST": "i32", "ANCESTORS": "i32"}
MODEL_POINTERS = {"Q", "K_NEW", "V_NEW", "K_CACHE", "V_CACHE", "OUT"}
FLOATS = {"qk_scale", "cap_log2"}  # the other scalars are integers
_TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def variants(capability: int) -> list[KernelVariant]:
    """Every variant the planners can launch on sm_<capability> (a key of SHARED_MEMORY_PER_BLOCK)."""
    limit = SHARED_MEMORY_PER_BLOCK[capability]
    return tree_attention_triton.launch_configs(limit) + invariant_attention_triton.launch_configs(limit)


def shape(variant: KernelVariant) -> tuple:
    """What sizes a buffer: kernel, element size, tiles, warps and stages. Variants of one shape differ
    only in code that allocates nothing (fp16 or bf16, the window and soft-cap switches, constants
    that index and mask), so they use the same shared memory (tests/test_aot_compile.py checks)."""
    c = dict(variant.constexprs)
    return (variant.kernel.__name__, variant.dtype.itemsize, c.get("BLOCK_M"), c.get("BLOCK_N"),
            c.get("BLOCK_H"), c["BLOCK_D"], variant.num_warps, variant.num_stages)


def extremes(chosen: list[KernelVariant]) -> list[KernelVariant]:
    """Per kernel, element size and head-dim tile the largest tiles the planner picks (the nearest to
    the shared-memory limit); for 2-byte types also per packed-rows tile the smallest head-dim tile
    (each row count's code path: sm_90 multiplies 64 rows and more with wgmma, fp32 multiplies on
    CUDA cores at any count); per merge kernel and element size its smallest and largest tiles. Each
    in the version with the most code: every switch on, bf16 for 2-byte types."""
    def most_code(v):
        c = dict(v.constexprs)
        return v.dtype != torch.float16 and c.get("HAS_WINDOW", True) and c.get("SOFTCAP", True)

    def size(v):
        c = dict(v.constexprs)
        return c["BLOCK_D"] * c.get("BLOCK_M", c.get("BLOCK_H")), v.shared_estimate or 0

    groups: dict[tuple, list[KernelVariant]] = {}
    for v in filter(most_code, chosen):
        c, kernel = dict(v.constexprs), (v.kernel.__name__, v.dtype.itemsize)
        if v.shared_estimate is None:
            groups.setdefault((*kernel, "merge"), []).append(v)
        else:
            groups.setdefault((*kernel, "block_d", c["BLOCK_D"]), []).append(v)
            if v.dtype.itemsize == 2:
                groups.setdefault((*kernel, "block_m", c["BLOCK_M"]), []).append(v)
    picked = {}
    for key, members in groups.items():
        if key[2] == "merge":
            picked.update(dict.fromkeys((min(members, key=size), max(members, key=size))))
        elif key[2] == "block_d":
            picked[max(members, key=lambda v: v.shared_estimate)] = None
        else:
            picked[min(members, key=size)] = None
    return list(picked)


def small_shapes(chosen: list[KernelVariant], every_option: bool = True) -> list[KernelVariant]:
    """Each kernel's smallest bf16 shape at every switch setting, and in fp16 with every switch on;
    with every_option=False only its bf16 variant with every switch on."""
    out = []
    for kernel in dict.fromkeys(v.kernel.__name__ for v in chosen):
        mine = [v for v in chosen if v.kernel.__name__ == kernel]
        small = max((v for v in mine if v.dtype == torch.bfloat16),
                    key=lambda v: (-dict(v.constexprs)["BLOCK_D"], _switches_on(v)))
        twins = [v for v in mine if shape(v) == shape(small)
                 and (v.dtype == torch.bfloat16 or _switches_on(v) == _switches_on(small))]
        out += twins if every_option else [small]
    return out


def _switches_on(v: KernelVariant) -> int:
    c = dict(v.constexprs)
    return c.get("HAS_WINDOW", False) + c.get("SOFTCAP", False)


# Other values of the constants that only index and mask, as a model gives them: a head dim below
# BLOCK_D = 128, a group that does not divide the 16 rows (7 heads x 2 tokens), another page size.
INDEX_VALUES = ({"HEAD_DIM": 80}, {"GROUP": 7, "BLOCK_Q": 2}, {"PAGE": 32})


def index_twins(variant: KernelVariant) -> list[KernelVariant]:
    """`variant` with each of INDEX_VALUES (the names it has)."""
    c = dict(variant.constexprs)
    return [replace(variant, constexprs=tuple({**c, **{k: x for k, x in values.items() if k in c}}.items()))
            for values in INDEX_VALUES]


def ci_jobs() -> list[tuple[int, KernelVariant]]:
    """What CI compiles: `extremes` and `small_shapes` for sm_86 and sm_90; on sm_86 also the index
    twins of the bf16 decode launch at head dim 128 (16 rows). sm_80 and sm_89 go through Triton's
    passes as sm_86 does (the same TTGIR; sm_89's PTX is sm_86's too, sm_89 having sm_86's shared
    memory and so its plans): for them one small shape a kernel, which the test compares with sm_86's,
    and sm_80's extremes that sm_86 does not choose (the larger tiles its shared memory allows).
    Every variant left out fits by its planner's estimate, which bounds every compiled one;
    `main --all` compiles them all (some 40 minutes on 2 cores)."""
    chosen = {c: variants(c) for c in SHARED_MEMORY_PER_BLOCK}
    on_86 = set(chosen[86])
    picks = {c: extremes(chosen[c]) + small_shapes(chosen[c]) for c in (86, 90)}
    picks[80] = [v for v in extremes(chosen[80]) if v not in on_86] + small_shapes(chosen[80], False)
    picks[89] = small_shapes(chosen[89], False)
    jobs = dict.fromkeys((c, v) for c, vs in picks.items() for v in vs)
    for v in chosen[86]:  # the bf16 decode launches: head dim 128, 16 rows, no switch on
        c = dict(v.constexprs)
        if v.dtype == torch.bfloat16 and (c.get("BLOCK_M"), c["BLOCK_D"], _switches_on(v)) == (16, 128, 0):
            jobs.update(dict.fromkeys((86, t) for t in [v, *index_twins(v)]))
    return list(jobs)


def signature(variant: KernelVariant) -> dict[str, str]:
    """Triton's type of every argument of the kernel, as its launch passes them."""
    constexprs = dict(variant.constexprs)
    out = {}
    for name in variant.kernel.arg_names:
        if name in constexprs:
            out[name] = "constexpr"
        elif name.isupper():
            if name not in POINTERS and name not in MODEL_POINTERS:
                raise KeyError(f"{variant.kernel.__name__}: the type of tensor argument {name} is unknown")
            out[name] = "*" + POINTERS.get(name, _TYPES[variant.dtype])
        else:
            out[name] = "fp32" if name in FLOATS else "i32"
    return out


def compile_variant(variant: KernelVariant, capability: int) -> dict:
    """Compile for sm_<capability>: {"shared": bytes of shared memory, "ttgir" and "ptx": hashes of
    the TTGIR and the PTX less their target, "seconds": compile time}."""
    types = signature(variant)
    aligned = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(variant.kernel.arg_names)
               if types[name].startswith("*") or name.startswith("stride_")}
    start = time.perf_counter()
    compiled = triton.compile(
        triton.compiler.ASTSource(variant.kernel, types, dict(variant.constexprs), aligned),
        target=GPUTarget("cuda", capability, 32),
        options=dict(num_warps=variant.num_warps, num_stages=variant.num_stages))
    ttgir = re.sub(r'"cuda:\d+"', "", compiled.asm["ttgir"])
    ptx = re.sub(r"^\.target .*$", "", compiled.asm["ptx"], flags=re.MULTILINE)
    return {"shared": compiled.metadata.shared, "ttgir": _digest(ttgir), "ptx": _digest(ptx),
            "seconds": round(time.perf_counter() - start, 2)}


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


_JOBS: list[tuple[int, KernelVariant]] = []  # what the forked workers compile, by index


def _compile_job(i: int) -> dict:
    capability, variant = _JOBS[i]
    try:
        result = compile_variant(variant, capability)
    except Exception as e:  # reported, not raised: the test names every variant that fails
        result = {"error": f"{type(e).__name__}: {e}"[:2000]}
    return dict(result, capability=capability, variant=variant.name)


def main(argv: list[str] | None = None) -> None:
    """Compile `ci_jobs`, or with --all every variant of the given architectures; one JSON line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", nargs="+", type=int, choices=sorted(SHARED_MEMORY_PER_BLOCK),
                        metavar="CAPABILITY", help="every variant of these architectures (80 86 89 90)")
    parser.add_argument("--processes", type=int, default=os.cpu_count())
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("unset TRITON_INTERPRET: the interpreter's kernels cannot be compiled")
    _JOBS[:] = [(c, v) for c in args.all for v in variants(c)] if args.all else ci_jobs()
    with multiprocessing.get_context("fork").Pool(args.processes) as pool:
        for result in pool.imap_unordered(_compile_job, range(len(_JOBS))):
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
