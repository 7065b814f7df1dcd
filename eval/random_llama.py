"""Randomly initialised Llamas of a real model's shape: the cost of the real thing on a GPU.

A random 8B-shaped Llama has the compute of the real one but accepts no draft: its greedy
choices are noise. Under `RecordedTarget(sequences, eos_id, model=random_llama("8b", "cuda"))`
(lookahead/engine/recorded_target.py) it runs the real forward over every step, and the recorded
greedy output of a real model (SmolLM2's, from `lookahead run --trace-output`) chooses: the
engine, its drafters and its controller see the token stream and acceptance of the model
that made the trace, at the step cost of the big one.
"""
from __future__ import annotations

import torch

# Llama-3-8B's shape (vocabulary included, so the lm_head costs what it costs there);
# "tiny" is the same code path at a size that runs anywhere, for tests and smoke runs.
SHAPES = {
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=49152, max_position_embeddings=8192),
}


def random_llama(shape: str, device: str, dtype: str = "bfloat16"):
    """A randomly initialised Llama of `shape` with our attention hooked in, built on `device`."""
    import transformers

    from lookahead.engine.attention import ATTENTION_NAME, register_attention

    register_attention()
    config = transformers.LlamaConfig(**SHAPES[shape])
    torch.manual_seed(0)
    with torch.device(device):  # 8B parameters initialised on the host would take minutes
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype),
                                                              attn_implementation=ATTENTION_NAME)
    return model.eval()
