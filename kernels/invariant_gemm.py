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
* bf16 (oneDNN) `F.linear(x, W)`: row r of the output is bitwise the same for every number of
  rows >= 2 and wherever row r sits (K = 16 ... 4096, N = 64 ... 49152, up to 1,100 rows);
  one row alone takes another kernel (at K = 1536 it differs from 9 rows, at K = 64 and
  N = 64 from 64). Two rows cost what one does.

So the operand whose size varies (a step's rows, a request's queries) is padded to
`min_rows(dtype)` and goes in the columns (fp32) or in the rows of `F.linear` (bf16); the
other operand is cut into fixed-size blocks.

>>> import torch
>>> w = torch.randn(5, 8)
>>> x = torch.randn(3, 8)
>>> torch.equal(linear_rows(x, w)[1], linear_rows(x[1:2], w)[0])
True
>>> min_rows(torch.float32), min_rows(torch.bfloat16)
(16, 2)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

MIN_COLUMNS = 16  # fp32 (and dtypes not measured): the varying operand's columns, at least
MIN_ROWS_BF16 = 2


def min_rows(dtype: torch.dtype) -> int:
    """How many rows a linear layer in `dtype` multiplies at least, to be row-invariant."""
    return MIN_ROWS_BF16 if dtype == torch.bfloat16 else MIN_COLUMNS


def pad_columns(n: int) -> int:
    """The columns an fp32 product with `n` varying columns is computed with."""
    return max(n, MIN_COLUMNS)


def linear_rows(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [R, K] @ weightᵀ [K, N] (+ bias) -> [R, N], each row's result independent of the others (CPU):
    the rows padded to `min_rows`, as rows of `F.linear` in bf16 and as columns of weight @ xᵀ in
    fp32 (MKL's fastest layout for few rows there)."""
    rows = x.shape[0]
    pad = max(rows, min_rows(x.dtype)) - rows
    padded = F.pad(x, (0, 0, 0, pad)) if pad else x
    if x.dtype == torch.bfloat16:
        return F.linear(padded, weight, bias)[:rows]
    y = torch.mm(weight, padded.t()).t()[:rows].contiguous()
    return y + bias if bias is not None else y
