"""The linear layers of one decoding step on the CPU, in both layouts, by the rows a step multiplies.

For every body linear layer of the model (every layer, all projections) and then the LM
head, times `x @ Wᵀ` (`F.linear`, what transformers runs; not row-invariant) against the
row-invariant `W @ xᵀ` with the rows padded as `cpu_linear.InvariantLinear` pads them. The
weights are read from memory, as in a real step: the body's matrices together are far
larger than the CPU's caches.

  python -m lookahead.eval.bench_linear --dtype bfloat16 --rows 1 2 3 4 5 8 9 13 16 17 33
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from lookahead.engine.cpu_linear import InvariantLinear, use_invariant_linear
from lookahead.eval.tables import markdown_table
from lookahead.models import load_model


def milliseconds(layers: list[torch.nn.Linear], rows: int, repeats: int) -> float:
    """Mean ms to run `rows` rows through every layer once (inputs of each layer's width)."""
    dtype = layers[0].weight.dtype
    inputs = {w: torch.randn(rows, w, dtype=dtype) for w in {layer.in_features for layer in layers}}
    for layer in layers:  # warm-up
        layer(inputs[layer.in_features])
    start = time.perf_counter()
    for _ in range(repeats):
        for layer in layers:
            layer(inputs[layer.in_features])
    return (time.perf_counter() - start) / repeats * 1000


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 2, 3, 4, 5, 8, 9, 13, 16, 17, 33])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--model", default=None)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args(argv)
    lm = load_model(args.model, dtype=args.dtype, device="cpu")
    head = lm.model.get_output_embeddings()
    body = [m for m in lm.model.modules() if isinstance(m, torch.nn.Linear) and m is not head]
    table = []
    with torch.inference_mode():
        for rows in args.rows:
            times = []
            for on in (False, True):
                use_invariant_linear(lm.model, on=on)
                times += [milliseconds(body, rows, args.repeats), milliseconds([head], rows, args.repeats)]
            table.append([rows, *(f"{t:.1f}" for t in times), f"{(times[0] + times[1]) / (times[2] + times[3]):.2f}"])
    assert all(type(m) is InvariantLinear for m in body)
    print(f"{lm.name} {args.dtype}: {len(body)} body layers, head {tuple(head.weight.shape)}; {platform.node()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print(markdown_table(["rows", "x @ Wᵀ body ms", "x @ Wᵀ head ms", "invariant W @ xᵀ body ms",
                          "invariant W @ xᵀ head ms", "speedup"], table))


if __name__ == "__main__":
    main()
