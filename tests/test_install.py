"""The project installed next to transformers must not break model loading.

A top-level `kernels` package is what transformers imports its kernel hub from: a test
distribution shipping one at version 0.18.5 made transformers 5.23's model code fail with
ImportError. Ours is `lookahead.kernels`."""
from __future__ import annotations

import importlib.util
import subprocess
import sys


def test_no_top_level_kernels_module_of_ours():
    spec = importlib.util.find_spec("kernels")
    assert spec is None or "lookahead" not in (spec.origin or "") and "/main/kernels" not in (spec.origin or "")


def test_transformers_loads_a_model_with_lookahead_installed():
    # A fresh interpreter, so that nothing imported by the test session hides an import failure.
    code = (
        "import lookahead, lookahead.kernels.tree_attention, lookahead.drafters, transformers\n"
        "cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,"
        " num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)\n"
        "m = transformers.AutoModelForCausalLM.from_config(cfg)\n"
        "print(type(m).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "LlamaForCausalLM"
