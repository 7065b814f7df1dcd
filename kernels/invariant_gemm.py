"""Matrix products on the CPU whose every output element is computed the same way, whatever
the other rows of the call: the building block of tree-invariant verification.

A verify step multiplies a tree's rows together; plain decoding multiplies one row. For the
output to be the same bit for bit, each output element must come from the same sequence of
floating-point operations in both calls. BLAS libraries pick kernels (and reduction splits)
by shape, so this holds only under rules measured on the library (torch 2.13 CPU: MKL sgemm
for fp32, oneDNN for bf16; 1 and 2 threads; `tests/test_invariant_gemm.py` re-checks every
rule on the installed build, so a BLAS that breaks one fails there first):

* fp32, A [M, K] @ B [K, N] with M and K fixed: column j of the product is bitwise the same
  for every N >= MIN_COLUMNS and wherever column j sits; below 16 columns MKL switches
  kernels (at N = 9 and N = 16), and varying M changes results too. So the operand whose
  size varies (a step's rows, a request's queries) goes in the columns, padded to at least
  MIN_COLUMNS, and the other operand is cut into fixed-size blocks.
* bf16 `F.linear(x, W)`: row r of the output is bitwise the same for any number of rows
  when W's inner dimension K <= BF16_MAX_K (measured for K = 512 ... 1024 and N = 192 ...
  49152, up to 1,100 rows); at K = 1536 it differs from 9 rows on (2 threads), at K = 4096
  from 2 rows. So K is cut into equal chunks of at most BF16_MAX_K, each product taken
  alone and summed in fp32 in chunk order.

>>> import torch
>>> w = torch.randn(5, 8)
>>> x = torch.randn(3, 8)
>>> torch.equal(linear_rows(x, w)[1], linear_rows(x[1:2], w)[0])
True
>>> chunks(1536), chunks(576)
([(0, 768), (768, 1536)], [(0, 576)])
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

MIN_COLUMNS = 16
BF16_MAX_K = 1024


def pad_columns(n: int) -> int:
    """The columns a product with `n` varying columns is computed with."""
    return max(n, MIN_COLUMNS)


def chunks(k: int, limit: int = BF16_MAX_K) -> list[tuple[int, int]]:
    """[start, end) of K cut into the fewest equal chunks of at most `limit`."""
    n = -(-k // limit)
    size = -(-k // n)
    return [(s, min(k, s + size)) for s in range(0, k, size)]


def linear_rows(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [R, K] @ weightᵀ [K, N] (+ bias) -> [R, N], each row's result independent of the others (CPU)."""
    if x.dtype == torch.float32:
        rows = x.shape[0]
        cols = x if rows >= MIN_COLUMNS else F.pad(x, (0, 0, 0, MIN_COLUMNS - rows))
        y = torch.mm(weight, cols.t()).t()[:rows].contiguous()
        return y + bias if bias is not None else y
    parts = chunks(x.shape[1])
    if len(parts) == 1:
        return F.linear(x, weight, bias)
    acc = None
    for s, e in parts:
        y = F.linear(x[:, s:e], weight[:, s:e]).float()
        acc = y if acc is None else acc + y
    if bias is not None:
        acc = acc + bias.float()
    return acc.to(x.dtype)
