"""Accept: each request's accepted nodes and new tokens from the step's logits (rules in acceptance.py)."""
from __future__ import annotations

from lookahead.engine.acceptance import accept_greedy, accept_sampling
from lookahead.engine.request import isolated
from lookahead.engine.step import StepItem, Verified


def accept(items: list[StepItem], verified: Verified) -> None:
    """Set each item's `result`: None for a prefill chunk (nothing to decide yet) or a request whose
    acceptance failed (its error set)."""
    targets = verified.logits.argmax(-1).cpu().numpy()  # waits for the forward
    indptr = verified.inputs.logit_indptr.tolist()
    for b, it in enumerate(items):
        if not it.decides:
            it.result = None
            continue
        req, tree, lo, hi = it.request, it.tree, indptr[b], indptr[b + 1]
        if req.params.temperature == 0:
            it.result = isolated(req, lambda: accept_greedy(tree, targets[lo:hi]))
        else:
            p = req.params
            it.result = isolated(req, lambda: accept_sampling(tree, verified.logits[lo:hi], p.temperature,
                                                               p.top_p, req.rng))
