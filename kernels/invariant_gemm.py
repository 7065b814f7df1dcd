"""Matrix products on the CPU whose every output element is computed the same way, whatever
the other rows of the call: the building block of tree-invariant verification.

A verify step multiplies a tree's rows together; plain decoding multiplies one row. For the
output to be the same bit for bit, each output element must come from the same sequence of
floating-point operations in both calls. BLAS libraries pick kernels (and reduction splits)
by shape, so this holds only under rules measured on the library (torch 2.13 CPU: MKL sgemm
for fp32, oneDNN for bf16; 1 and 2 threads; tests/test_cpu_linear.py and tests/test_tree_invariance.py
re-check them on the installed build, so a BLAS that breaks one fails there first):

* fp32, A [M, K] @ B [K, N] with M and K fixed: column j of the product is bitwise the same
  for every N >= 16 and wherever column j sits; below 16 columns MKL switches kernels (at
  N = 9 and N = 16), and varying M changes results too.
* bf16 (oneDNN), the same with N >= 2: one column differs from two at K = 1536.
  (`F.linear(x, W)`, which puts the rows in M, is not row-invariant in bf16 either: at
  K = 1536 it differs from 9 rows on, at K = 64 and N = 64 from 64 rows on.)

So the operand whose size varies (a step's rows, a request's queries) goes in the columns,
padded to `min_columns`, and the other operand is cut into fixed-size blocks.

>>> import torch
>>> w = torch.randn(5, 8)
>>> x = torch.randn(3, 8)
>>> torch.equal(linear_rows(x, w)[1], linear_rows(x[1:2], w)[0])
True
>>> min_columns(torch.float32), min_columns(torch.bfloat16)
(16, 2)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

MIN_COLUMNS = 16  # fp32 (and dtypes not measured)
MIN_COLUMNS_BF16 = 2


def min_columns(dtype: torch.dtype) -> int:
    return MIN_COLUMNS_BF16 if dtype == torch.bfloat16 else MIN_COLUMNS


def pad_columns(n: int, dtype: torch.dtype = torch.float32) -> int:
    """The columns a product with `n` varying columns is computed with."""
    return max(n, min_columns(dtype))


def linear_rows(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [R, K] @ weightᵀ [K, N] (+ bias) -> [R, N], each row's result independent of the others (CPU):
    computed as weight @ xᵀ with the rows as columns, padded to `min_columns`."""
    rows = x.shape[0]
    pad = pad_columns(rows, x.dtype) - rows
    cols = F.pad(x, (0, 0, 0, pad)) if pad else x
    y = torch.mm(weight, cols.t()).t()[:rows].contiguous()
    return y + bias if bias is not None else y
