"""A target that costs what a big model costs and chooses what a recorded trace says.

A randomly initialised 8B-shaped Llama has the compute of the real thing but accepts
no draft: its greedy choices are noise. `ReplayedTarget` runs the model's real
forward over the real step (every chain token and draft node, the real tree
attention, the real logits rows), then replaces the logits by a one-hot of the
recorded greedy output of a real model (SmolLM2's, from `lookahead run
--trace-output`). Greedy output does not depend on the drafts, so the engine, its
drafters and its controller see exactly the token stream and acceptance they would
see with the model that made the trace, at the step cost of the big model.

The choice at a query is read off its position: the token after position p of a
request is its recorded sequence (prompt + output) at index p + 1. Past the end of
the recording the choice is end-of-sequence.

>>> # target = ReplayedTarget(random_llama("8b", "cuda"), {r.id: r.prompt_ids + r.output_ids for r in trace},
>>> #                         eos_id, batch_ids=lambda: [r.id for r in engine.running if r.error is None])
"""
from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

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

    from lookahead.attention import ATTENTION_NAME, register_attention

    register_attention()
    config = transformers.LlamaConfig(**SHAPES[shape])
    torch.manual_seed(0)
    with torch.device(device):  # 8B parameters initialised on the host would take minutes
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype),
                                                              attn_implementation=ATTENTION_NAME)
    return model.eval()


class ReplayedTarget(torch.nn.Module):
    """`model`'s forward for the cost, the recorded sequences for the greedy choice.

    sequences  request id -> prompt + recorded output (token ids)
    batch_ids  the ids of the requests in the step being verified, in batch order
               (the engine's running requests without an error: its `batch`)
    """

    def __init__(self, model, sequences: dict[str, list[int]], eos_id: int, batch_ids: Callable[[], list[str]]):
        super().__init__()
        self.model = model
        self.sequences, self.eos_id, self.batch_ids = sequences, eos_id, batch_ids

    @property
    def config(self):
        return self.model.config

    def get_input_embeddings(self):  # the engine checks drafted ids against the vocabulary
        return self.model.get_input_embeddings()

    def forward(self, input_ids, position_ids, lookahead_step, logits_to_keep, **kw):
        out = self.model(input_ids=input_ids, position_ids=position_ids, lookahead_step=lookahead_step,
                         logits_to_keep=logits_to_keep, **kw)
        rows = logits_to_keep.cpu()
        owner = torch.searchsorted(lookahead_step.qo_indptr.cpu().long(), rows, right=True) - 1
        positions = position_ids[0].cpu()[rows].tolist()
        ids = self.batch_ids()
        choice = []
        for b, p in zip(owner.tolist(), positions):
            seq = self.sequences[ids[b]]
            choice.append(seq[p + 1] if p + 1 < len(seq) else self.eos_id)
        logits = torch.zeros_like(out.logits)
        dev = logits.device
        logits[0, torch.arange(len(choice), device=dev), torch.tensor(choice, device=dev)] = 1.0
        return SimpleNamespace(logits=logits)
