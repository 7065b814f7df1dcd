"""Update: move each request past what its step accepted, cut at end-of-sequence and max_new_tokens."""
from __future__ import annotations

from lookahead.drafters import Drafter
from lookahead.engine.request import Request, isolated
from lookahead.engine.step import StepItem


def update(items: list[StepItem], eos: set[int], drafter: Drafter | None, now: float) -> None:
    """kv_len past the committed KV; tokens, counters and the drafter's state past the new tokens."""
    for it in items:
        req, res = it.request, it.result
        if req.error is not None:
            continue
        req.kv_len += len(it.chain)
        if res is None:
            continue
        req.kv_len += len(res.nodes)
        new = truncate(req, res.tokens, eos)
        req.tokens += new
        req.forwards += 1
        req.drafted += len(it.tree)
        req.accepted += len(res.nodes)
        req.first_token_at = req.first_token_at or now
        if drafter is not None:
            isolated(req, lambda: drafter.update(req.id, new))


def truncate(req: Request, tokens: list[int], eos: set[int]) -> list[int]:
    """Cut at the first end-of-sequence token (kept) and at max_new_tokens.

    >>> from lookahead.engine.config import SamplingParams
    >>> r = Request("r", [1], SamplingParams(max_new_tokens=3), tokens=[1, 4])
    >>> truncate(r, [5, 6, 7], eos={9}), truncate(r, [9, 6], eos={9})
    ([5, 6], [9])
    """
    left = req.params.max_new_tokens - len(req.output_ids)
    out = []
    for t in tokens[:left]:
        out.append(t)
        if t in eos:
            break
    return out


def complete(req: Request, eos: set[int]) -> bool:
    """The request has all its tokens, or ended with end-of-sequence."""
    out = req.output_ids
    return len(out) >= req.params.max_new_tokens or (bool(out) and out[-1] in eos)
