"""The value one step passes from stage to stage, and what it logs."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lookahead.drafters import DraftTree
from lookahead.engine.acceptance import Acceptance
from lookahead.engine.request import Request
from lookahead.engine.tree_inputs import RequestSlice, StepInputs


@dataclass
class StepItem:
    """One request's part of a step, from propose to update."""

    request: Request
    chain: list[int]  # [c] its committed tokens that still need their KV (a prefill chunk or the bonus token)
    tree: DraftTree  # its draft tree, pruned by the controller (and the memory back-off)
    result: Acceptance | None = None  # accepted nodes and new tokens; None for a prefill chunk

    @property
    def slice(self) -> RequestSlice:
        return RequestSlice(self.chain, self.request.kv_len, self.tree)

    @property
    def decides(self) -> bool:
        """The chain reaches the request's last token: its logits choose new tokens (not a mid-prompt chunk)."""
        return self.request.kv_len + len(self.chain) == len(self.request.tokens)


@dataclass
class Verified:
    """One verify pass over the step's ΣT new tokens, R of them scored, in L layers.

    logits     float32 [R, V]               rows as `inputs.logit_rows`, per request by `inputs.logit_indptr`;
                                            None from a target that gives only its choices
    scratch_k  [L, ΣT, kv_heads, head_dim]  the new tokens' keys (values alike), for commit to copy
    greedy     int64 [R]                    the rows' argmax, where the target gives it (a recorded one)
    topk       int64 [R, k]                 the rows' likeliest tokens, where the target gives them
    """

    inputs: StepInputs
    logits: torch.Tensor | None
    scratch_k: torch.Tensor
    scratch_v: torch.Tensor
    greedy: torch.Tensor | None = None
    topk: torch.Tensor | None = None

    def choices(self) -> torch.Tensor:
        """int64 [R]: each row's greedy choice."""
        return self.greedy if self.greedy is not None else self.logits.argmax(-1)

    def likeliest(self, rows: list[int], k: int) -> torch.Tensor | None:
        """int64 [len(rows), k]: the k likeliest tokens of these rows, best first (row by row); None from a
        target that gives neither logits nor them (a trace recorded without them)."""
        if self.topk is not None:
            return self.topk[rows, :k]
        return None if self.logits is None else self.logits[rows].topk(k, dim=-1).indices


@dataclass
class StepStats:
    requests: int
    query_tokens: int
    kv_tokens: int
    draft_nodes: int
    seconds: float
    oom_retries: int = 0  # attempts of this step that ran out of GPU memory before this one fit
    propose_seconds: float = 0.0  # wall time of the drafter's proposals (real time, whatever the engine's clock)
