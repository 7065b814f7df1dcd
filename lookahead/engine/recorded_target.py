"""A target whose greedy choices are read from recorded outputs: the engine replayed without the model.

`lookahead run --trace-output trace.jsonl` records each request's prompt and greedy output.
Greedy output does not depend on the drafts, so the recorded sequence says what the target
chooses at every position: the token after position p of a request is its sequence
(prompt + output) at index p + 1, end-of-sequence past the end. `RecordedTarget` answers
every query row of a step with that choice (its `greedy` ids, and no logits: it decodes greedily
only, and a vocabulary-wide one-hot per row cost more than the rest of replay), so the real `Engine` (its
admission, prefill chunks, drafters, controller, acceptance and truncation) decodes the
recorded outputs exactly as with the model that made them. Three ways to cost a step:

  * nothing (replay: τ, tree sizes and acceptance only);
  * `cost` and a `SimulatedClock`: each forward moves the clock by the cost curve's time
    for the step (the load simulator), so the engine measures simulated seconds;
  * `model`: a real forward over the step's real inputs (an 8B-shaped random model on a
    GPU), whose logits are then replaced by the recorded choices.

>>> import torch
>>> from lookahead.engine import Engine, EngineConfig, SamplingParams
>>> target = RecordedTarget({"r": [1, 2, 5, 6, 7]}, vocab_size=8)
>>> engine = Engine(target, config=EngineConfig(controller="off"), eos_token_ids=[])
>>> engine.run({"r": [1, 2]}, SamplingParams(max_new_tokens=3))["r"].output_ids
[5, 6, 7]
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch

from lookahead.engine.cost_model import CostCoefficients


@dataclass
class SimulatedClock:
    """The engine's clock in a simulation: seconds that only the cost curve moves."""

    now: float = 0.0

    def __call__(self) -> float:
        return self.now


class RecordedTarget(torch.nn.Module):
    """sequences: request id -> prompt + recorded output. eos_id: the choice past a recording's end.

    successors  request id -> the target's likeliest tokens at each recorded output position (int [O][k],
                best first), as `lookahead run --trace-output` records them; rows past them repeat eos_id
    vocab_size  the logits' width (with a model: its own)
    model       a causal LM with our attention, run for its cost (None: no forward at all)
    cost, clock the cost curve and the clock it moves, per forward (both or neither)
    """

    def __init__(self, sequences: dict[str, list[int]], eos_id: int = 0, vocab_size: int | None = None,
                 model=None, cost: CostCoefficients | None = None, clock: SimulatedClock | None = None,
                 successors: dict[str, list[list[int]]] | None = None):
        super().__init__()
        if (cost is None) != (clock is None):
            raise ValueError("a cost curve needs the clock it moves, and a clock its cost curve")
        self.sequences, self.eos_id, self.model, self.cost, self.clock = sequences, eos_id, model, cost, clock
        self.successors = successors or {}
        self.k = min((len(rows[0]) for rows in self.successors.values() if rows), default=0)
        recorded = [t for rows in self.successors.values() for row in rows for t in row]
        if model is None:
            self.vocab_size = vocab_size or 1 + max(max(max(s) for s in sequences.values()), max(recorded, default=0))
            # One KV head of one dimension in one layer: the engine's cache and scratch cost nothing.
            self.config = SimpleNamespace(num_hidden_layers=1, num_key_value_heads=1, num_attention_heads=1,
                                          head_dim=1, hidden_size=1, max_position_embeddings=1 << 30,
                                          _attn_implementation=None)
            self._device = torch.nn.Parameter(torch.zeros(1), requires_grad=False)  # the engine's device and dtype
        else:
            self.vocab_size, self.config = model.config.vocab_size, model.config

    def get_input_embeddings(self):  # the engine checks drafted ids against the vocabulary
        return SimpleNamespace(num_embeddings=self.vocab_size)

    def forward(self, input_ids, position_ids, lookahead_step, logits_to_keep, **kw):
        if self.model is not None:
            self.model(input_ids=input_ids, position_ids=position_ids, lookahead_step=lookahead_step,
                       logits_to_keep=logits_to_keep, **kw)
        if self.cost is not None:
            kv = int(lookahead_step.kv_lens.sum())
            self.clock.now += float(self.cost.predict(len(lookahead_step.kv_lens), input_ids.numel(), kv))
        rows = logits_to_keep.cpu()
        owner = torch.searchsorted(lookahead_step.qo_indptr.cpu().long(), rows, right=True) - 1
        positions = position_ids[0].cpu()[rows].tolist()
        choice, likeliest = [], []
        for b, p in zip(owner.tolist(), positions):
            rid = lookahead_step.request_ids[b]
            seq = self.sequences[rid]
            choice.append(seq[p + 1] if p + 1 < len(seq) else self.eos_id)
            if self.k:
                rows = self.successors.get(rid, [])
                j = p + 1 - (len(seq) - len(rows))  # the output position this row chooses
                likeliest.append(rows[j][: self.k] if 0 <= j < len(rows) else [self.eos_id] * self.k)
        device = input_ids.device
        topk = torch.tensor(likeliest, dtype=torch.int64, device=device).view(-1, self.k) if self.k else None
        return SimpleNamespace(logits=None, greedy=torch.tensor(choice, dtype=torch.int64, device=device), topk=topk)
