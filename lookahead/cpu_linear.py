"""Linear layers for a decoding step's few rows on the CPU, in the layout MKL serves fastest.

A decode or verify step multiplies a handful of activation rows by every weight
matrix. `F.linear` computes x @ Wᵀ, which MKL runs as a GEMV at one row and as a skinny
GEMM at a few; the same product computed as W @ xᵀ, with the rows padded to a power of
two, reads the weights up to three times as fast. SmolLM2's 210 body matrices, fp32, on
the project's 2-core VM (`python -m lookahead.eval.bench_linear`, eval/RESULTS.md §1):

    rows                1     2     3     4     8    16    33
    x @ Wᵀ        ms   38.6  59.3  70.6  53.6  43.8  50.8  73.5
    W @ xᵀ padded ms   21.5  20.0  27.4  25.8  39.0  51.0  72.8

Above 16 rows (prefill) the layouts cost the same and `F.linear` is kept, as it is on a
GPU and in other dtypes, where the layout was not measured to pay. (Unpadded, W @ xᵀ
took 72-88 ms at 13-15 rows: hence the padding.)

>>> import torch
>>> layer = torch.nn.Linear(4, 3)
>>> x = torch.randn(2, 1, 4)
>>> expect = layer(x)
>>> use_row_gemm(layer)
>>> type(layer).__name__, torch.allclose(layer(x), expect, atol=1e-6)
('RowGemmLinear', True)
>>> use_row_gemm(layer, on=False); type(layer).__name__
'Linear'
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MAX_ROWS = 16


class RowGemmLinear(nn.Linear):
    """An `nn.Linear` (same parameters, same state dict) whose forward takes the W @ xᵀ layout for few rows."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        if rows > MAX_ROWS or not pads_rows(x.device, x.dtype):
            return F.linear(x, self.weight, self.bias)
        flat = x.reshape(rows, x.shape[-1])
        if _PADDED[rows] > rows:
            flat = F.pad(flat, (0, 0, 0, _PADDED[rows] - rows))
        y = torch.mm(self.weight, flat.t()).t()[:rows].contiguous()
        if self.bias is not None:
            y += self.bias
        return y.view(*x.shape[:-1], y.shape[-1])


def pads_rows(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether a model's forward on `device` in `dtype` takes the padded W @ xᵀ layout (fp32 on the CPU)."""
    return device.type == "cpu" and dtype == torch.float32


def padded_rows(rows):
    """The rows a forward of `rows` query tokens multiplies (an array in, an array out): the next
    power of two, at least 2, up to MAX_ROWS; as many as there are past it.

    >>> padded_rows(np.array([1, 2, 3, 5, 9, 16, 17])).tolist()
    [2.0, 2.0, 4.0, 8.0, 16.0, 16.0, 17.0]
    """
    rows = np.asarray(rows, np.float64)
    pow2 = np.maximum(2.0, np.exp2(np.ceil(np.log2(np.maximum(rows, 1.0)))))
    return np.where(rows <= MAX_ROWS, pow2, rows)


_PADDED = [0] + [int(r) for r in padded_rows(np.arange(1, MAX_ROWS + 1))]  # rows -> padded, for the forward


def use_row_gemm(model: nn.Module, on: bool = True) -> None:
    """Switch every plain `nn.Linear` of `model` to `RowGemmLinear` (or back): the same modules and
    parameters (tied weights stay tied), only the class changes, so it costs nothing to undo."""
    old, new = (nn.Linear, RowGemmLinear) if on else (RowGemmLinear, nn.Linear)
    for module in model.modules():
        if type(module) is old:
            module.__class__ = new

