"""Accept: each request's accepted nodes and new tokens from the step's logits (rules in acceptance.py)."""
from __future__ import annotations

from lookahead.engine.acceptance import accept_greedy, accept_sampling, token_logprobs
from lookahead.engine.request import isolated
from lookahead.engine.step import StepItem, Verified


def accept(items: list[StepItem], verified: Verified, successors: int = 0) -> None:
    """Set each item's `result` (with its tokens' log-probabilities when the request asks for them, and
    the target's `successors` likeliest tokens at each when > 0): None for a prefill chunk (nothing to
    decide yet) or a request whose acceptance failed (its error set)."""
    targets = verified.choices().cpu().numpy()  # waits for the forward
    indptr = verified.inputs.logit_indptr.tolist()
    for b, it in enumerate(items):
        if not it.decides:
            it.result = None
            continue
        req, tree, p, lo, hi = it.request, it.tree, it.request.params, indptr[b], indptr[b + 1]
        rows = None if verified.logits is None else verified.logits[lo:hi]  # None: a target of choices only
        if p.temperature == 0:
            it.result = isolated(req, lambda: accept_greedy(tree, targets[lo:hi]))
        else:
            it.result = isolated(req, lambda: accept_sampling(tree, rows, p.temperature, p.top_p, req.rng,
                                                               p.top_k, p.min_p))
        if it.result is not None and p.logprobs is not None:
            it.result.logprobs = token_logprobs(rows, it.result, p.logprobs)
        if it.result is not None and successors:
            likeliest = verified.likeliest([lo + r for r in it.result.rows], successors)
            it.result.successors = None if likeliest is None else likeliest.cpu().numpy()
