"""One compiled variant of a Triton kernel: the kernel with the compile-time choices of a launch.

The launch code of tree_attention_triton.py and invariant_attention_triton.py builds one for every
kernel it launches and launches through it, and each module's `launch_configs` lists every variant
its planner can choose, so the kernels that run and the kernels tests/test_aot_compile.py compiles
ahead of time (aot.py) come from one definition.

>>> def _merge(): pass
>>> v = KernelVariant(kernel=_merge, dtype=torch.bfloat16, constexprs=(("BLOCK_D", 128),), num_warps=4,
...                   num_stages=2, shared_estimate=None)
>>> v.options
{'BLOCK_D': 128, 'num_warps': 4, 'num_stages': 2}
>>> v.name
'_merge bfloat16 BLOCK_D=128 warps=4 stages=2'
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class KernelVariant:
    """kernel: the @triton.jit function; dtype: the model's tensors (q, k, v, the caches, the output);
    constexprs: (name, value) pairs; shared_estimate: `tile_bytes` of its tiles (shared_memory.py),
    None for a kernel without tiles to fit (the merges)."""

    kernel: object
    dtype: torch.dtype
    constexprs: tuple
    num_warps: int
    num_stages: int
    shared_estimate: int | None

    @property
    def name(self) -> str:
        """The kernel and every choice, for messages."""
        choices = " ".join(f"{k}={v}" for k, v in self.constexprs)
        return (f"{self.kernel.__name__} {str(self.dtype).removeprefix('torch.')} {choices} "
                f"warps={self.num_warps} stages={self.num_stages}")

    @property
    def options(self) -> dict:
        """The keyword arguments of the launch besides the tensors and scalars."""
        return dict(self.constexprs, num_warps=self.num_warps, num_stages=self.num_stages)

    def launch(self, grid, *args):
        self.kernel[grid](*args, **self.options)
