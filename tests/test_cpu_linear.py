"""The CPU's row-invariant linear layout: the same numbers as nn.Linear, each row as if alone, and a reversible switch."""
from __future__ import annotations

import pytest
import torch
from conftest import tiny_model

from lookahead.engine.cpu_linear import InvariantLinear, padded_rows, use_invariant_linear


@pytest.mark.parametrize("rows", [1, 2, 3, 5, 8, 13, 16, 17, 40])
@pytest.mark.parametrize("bias", [True, False])
def test_same_output_as_nn_linear_at_every_row_count(rows, bias):
    torch.manual_seed(rows)
    layer = torch.nn.Linear(24, 10, bias=bias)
    x = torch.randn(1, rows, 24)
    expect = layer(x)
    use_invariant_linear(layer)
    out = layer(x)
    assert type(layer) is InvariantLinear and out.shape == expect.shape and out.is_contiguous()
    torch.testing.assert_close(out, expect, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_each_row_equals_that_row_alone_at_smollm2_shapes(dtype):
    torch.manual_seed(0)
    for n_out, k in [(576, 576), (1536, 576), (576, 1536), (4096, 576)]:
        layer = torch.nn.Linear(k, n_out, bias=False).to(dtype)
        use_invariant_linear(layer)
        x = torch.randn(70, k, dtype=dtype)
        alone = torch.cat([layer(x[i:i + 1]) for i in range(len(x))])
        for rows in (2, 9, 16, 17, 33, 70):
            assert torch.equal(layer(x[:rows]), alone[:rows]), (n_out, k, rows)


def test_switch_keeps_parameters_and_tied_weights_and_undoes():
    model = tiny_model()
    params = {n: p.data_ptr() for n, p in model.named_parameters()}
    use_invariant_linear(model)
    assert type(model.lm_head) is InvariantLinear
    assert {n: p.data_ptr() for n, p in model.named_parameters()} == params
    use_invariant_linear(model, on=False)
    assert not any(type(m) is InvariantLinear for m in model.modules())


def test_padded_rows_are_sixteen_at_least():
    assert padded_rows(list(range(1, 20))).tolist() == [16] * 16 + [17, 18, 19]


def test_layout_benchmark_runs_on_the_real_model(smollm2, capsys):
    from lookahead.eval import bench_linear

    bench_linear.main(["--rows", "1", "3", "--repeats", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 1 |") or line.startswith("| 3 |")]
    assert len(rows) == 2 and all(float(r.split("|")[-2]) > 0 for r in rows)
