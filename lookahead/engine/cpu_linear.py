"""Linear layers whose every row is computed as if it were alone in the step (CPU).

A verify step multiplies a tree's rows together, plain decoding one row; BLAS picks its
kernels by the number of rows, so `F.linear` gives a row other bits among others than
alone (fp32 at every shape, bf16 when one row is alone). `InvariantLinear` pads the rows to
where the BLAS computes each row alike (`lookahead.kernels.invariant_gemm`): 16, as the
columns of W @ xᵀ, in fp32 (the layout MKL serves fastest for few rows); 2, through
`F.linear`, in bf16 (two rows cost what one does).

On a GPU the layer runs `F.linear` (cuBLAS chooses kernels by M: not row-invariant).

Padding fp32 to 16 rows makes a one-row step cost what a 16-row step costs: the cost
model prices rows as `padded_rows` says, so the controller knows a tree of up to 15
nodes is free there.

>>> import torch
>>> layer = torch.nn.Linear(4, 3)
>>> x = torch.randn(2, 1, 4)
>>> expect = layer(x)
>>> use_invariant_linear(layer)
>>> type(layer).__name__, torch.allclose(layer(x), expect, atol=1e-6)
('InvariantLinear', True)
>>> torch.equal(layer(x)[1], layer(x[1:])[0])
True
>>> use_invariant_linear(layer, on=False); type(layer).__name__
'Linear'
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lookahead.kernels.invariant_gemm import MIN_COLUMNS, linear_rows


class InvariantLinear(nn.Linear):
    """An `nn.Linear` (same parameters, same state dict) whose rows do not depend on each other on the CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
            return F.linear(x, self.weight, self.bias)
        flat = x.reshape(-1, x.shape[-1])
        y = linear_rows(flat, self.weight, self.bias)
        return y.view(*x.shape[:-1], y.shape[-1])


def pads_rows(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether a model's exact forward on `device` in `dtype` multiplies its rows padded to 16 (fp32 on the CPU)."""
    return device.type == "cpu" and dtype == torch.float32


def padded_rows(rows):
    """The rows a padded forward of `rows` query tokens multiplies (an array in, an array out).

    >>> padded_rows(np.array([1, 2, 15, 16, 17])).tolist()
    [16.0, 16.0, 16.0, 16.0, 17.0]
    """
    return np.maximum(np.asarray(rows, np.float64), float(MIN_COLUMNS))


def linear_layers(model: nn.Module) -> list[nn.Linear]:
    """The plain linear layers of `model` (in either class), which the switches below act on."""
    return [m for m in model.modules() if type(m) in (nn.Linear, InvariantLinear)]


def use_invariant_linear(model: nn.Module, on: bool = True) -> None:
    """Switch every plain `nn.Linear` of `model` to `InvariantLinear` (or back): the same modules and
    parameters (tied weights stay tied), only the class changes, so it costs nothing to undo."""
    for module in linear_layers(model):
        module.__class__ = InvariantLinear if on else nn.Linear


@contextmanager
def invariant_rows(layers: list[nn.Linear], on: bool = True):
    """`layers` (from `linear_layers`) as `InvariantLinear` (or stock) inside the block, stock after it."""
    try:
        for module in layers:
            module.__class__ = InvariantLinear if on else nn.Linear
        yield
    finally:
        for module in layers:
            module.__class__ = nn.Linear
