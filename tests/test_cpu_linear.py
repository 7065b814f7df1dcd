"""The CPU's row-GEMM linear layout: the same numbers as nn.Linear, and a reversible switch."""
from __future__ import annotations

import pytest
import torch
from conftest import tiny_model

from lookahead.cpu_linear import RowGemmLinear, padded_rows, use_row_gemm


@pytest.mark.parametrize("rows", [1, 2, 3, 5, 8, 13, 16, 17, 40])
@pytest.mark.parametrize("bias", [True, False])
def test_same_output_as_nn_linear_at_every_row_count(rows, bias):
    torch.manual_seed(rows)
    layer = torch.nn.Linear(24, 10, bias=bias)
    x = torch.randn(1, rows, 24)
    expect = layer(x)
    use_row_gemm(layer)
    out = layer(x)
    assert type(layer) is RowGemmLinear and out.shape == expect.shape and out.is_contiguous()
    torch.testing.assert_close(out, expect, atol=1e-5, rtol=1e-5)


def test_other_dtypes_keep_f_linear():
    layer = torch.nn.Linear(8, 4).to(torch.bfloat16)
    x = torch.randn(3, 8, dtype=torch.bfloat16)
    expect = layer(x)
    use_row_gemm(layer)
    assert torch.equal(layer(x), expect)


def test_switch_keeps_parameters_and_tied_weights_and_undoes():
    model = tiny_model()
    params = {n: p.data_ptr() for n, p in model.named_parameters()}
    use_row_gemm(model)
    assert type(model.lm_head) is RowGemmLinear
    assert {n: p.data_ptr() for n, p in model.named_parameters()} == params
    use_row_gemm(model, on=False)
    assert not any(type(m) is RowGemmLinear for m in model.modules())


def test_padded_rows_are_powers_of_two_up_to_sixteen():
    assert padded_rows(list(range(1, 20))).tolist() == [2, 2, 4, 4] + [8] * 4 + [16] * 8 + [17, 18, 19]


def test_layout_benchmark_runs_on_the_real_model(smollm2, capsys):
    from lookahead.eval import bench_linear

    bench_linear.main(["--rows", "1", "3", "--repeats", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 1 |") or line.startswith("| 3 |")]
    assert len(rows) == 2 and all(float(r.split("|")[-2]) > 0 for r in rows)
