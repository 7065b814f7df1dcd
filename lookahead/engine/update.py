"""Update: move each request past what its step accepted, cut at end-of-sequence and max_new_tokens."""
from __future__ import annotations

from lookahead.drafters import Drafter
from lookahead.engine.request import Request, isolated
from lookahead.engine.step import StepItem


def update(items: list[StepItem], eos: set[int], drafter: Drafter | None, now: float, tokenizer=None) -> None:
    """kv_len past the committed KV; tokens, counters and the drafter's state past the new tokens
    (cut at a stop string, which needs the `tokenizer`)."""
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
        if req.params.stop and tokenizer is not None:
            new = new[: len(new) - cut_at_stop(req, tokenizer)]
        if res.logprobs is not None:
            req.logprobs += res.logprobs[: len(new)]
        if res.successors is not None:
            req.successors += res.successors[: len(new)].tolist()
            if drafter is not None:
                isolated(req, lambda: drafter.observe_successors(req.id, res.successors[: len(new)]))
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


def cut_at_stop(req: Request, tokenizer) -> int:
    """If the output's text holds a stop string: end the output with the token that completes the first
    one, mark where its text ends (`stop_text_end`) and return how many tokens were dropped; else 0.

    Plain decoding cuts at the same token, so speculative output stays equal to it.
    """
    out = req.output_ids
    text = tokenizer.decode(out, skip_special_tokens=True)
    hits = [(i, len(s), s) for s in req.params.stop if (i := text.find(s)) >= 0]
    if not hits:
        return 0
    end, _, stop = min(hits)  # the first in the text; of those starting there, the shortest
    keep = next(k for k in range(1, len(out) + 1)
                if tokenizer.decode(out[:k], skip_special_tokens=True).find(stop) == end)
    req.tokens = req.tokens[: len(req.tokens) - (len(out) - keep)]
    req.stop_text_end = end
    return len(out) - keep


def complete(req: Request, eos: set[int]) -> bool:
    """The request has all its tokens, ended with end-of-sequence, or met a stop string."""
    out = req.output_ids
    return len(out) >= req.params.max_new_tokens or (bool(out) and out[-1] in eos) or req.stop_text_end is not None
