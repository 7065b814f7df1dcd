"""Prompt lookup drafter: every earlier occurrence of the context's last n-grams, as one tree.

Hugging Face drafts the chain after the leftmost match of the last n tokens. Here one
backward scan (numba) measures, for every earlier position, how many tokens before it
agree with the end of the context (capped at max_ngram); every position with at least
min_ngram agreeing tokens is a match. The continuations of the longest and most recent
`max_matches` matches merge into a trie where a match of length m weighs
length_base ** (m - 1), so one long match outvotes many short ones. A node's score is
its weight over its siblings' total weight plus `alpha` (the pseudo-weight of "none of
these"), and the tree keeps the max_nodes nodes of highest path probability.

Example: the context ends in "1 2"; "1 2" was followed once by 3 and once by 5, and
"2" alone also by 9. The two 2-token matches weigh 4 each, the 1-token match 1, so
the root's scores are 4/10, 4/10 and 1/10 (alpha = 1 in the denominator):

>>> d = PromptLookupDrafter(max_ngram=2)
>>> d.start("r", [1, 2, 3, 7, 1, 2, 5, 0, 2, 9, 1, 2])
>>> t = d.propose("r", TreeBudget(max_nodes=5, max_depth=2))
>>> t.paths()
[[5, 0], [3, 7], [9]]
>>> [round(s, 3) for s in t.scores.tolist()]
[0.4, 0.8, 0.4, 0.8, 0.1]
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit

from .base import Drafter, RequestStates
from .tree import DraftTree, TreeBudget


@njit(cache=True)
def _find_matches(ctx, n, min_n, max_n, max_matches):
    """Continuation starts and match lengths: longest first, then most recent first.

    Scans backwards so each length's bucket fills with its most recent matches.
    """
    bucket = np.empty((max_n + 1, max_matches), np.int64)
    fill = np.zeros(max_n + 1, np.int64)
    for j in range(n - 1, 0, -1):  # the match ends at j - 1, its continuation starts at j
        m = 0
        while m < max_n and m < j and ctx[j - 1 - m] == ctx[n - 1 - m]:
            m += 1
        if m >= min_n and fill[m] < max_matches:
            bucket[m, fill[m]] = j
            fill[m] += 1
    starts = np.empty(max_matches, np.int64)
    lengths = np.empty(max_matches, np.int64)
    k = 0
    for m in range(max_n, min_n - 1, -1):
        for i in range(fill[m]):
            if k == max_matches:
                return starts, lengths
            starts[k] = bucket[m, i]
            lengths[k] = m
            k += 1
    return starts[:k], lengths[:k]


@njit(cache=True)
def _propose(ctx, n, min_n, max_n, max_matches, max_nodes, max_depth, base, alpha):
    starts, lengths = _find_matches(ctx, n, min_n, max_n, max_matches)
    cap = len(starts) * max_depth + 1
    tok = np.empty(cap, np.int64)
    par = np.empty(cap, np.int64)
    weight = np.zeros(cap, np.float64)
    child_w = np.zeros(cap, np.float64)  # total weight of a node's children
    first = np.full(cap, -1, np.int64)
    sibling = np.full(cap, -1, np.int64)
    nodes = 1  # node 0 is the root (the last committed token)
    for k in range(len(starts)):
        w = base ** (lengths[k] - 1)
        node = 0
        for j in range(starts[k], min(starts[k] + max_depth, n)):
            c = first[node]
            while c != -1 and tok[c] != ctx[j]:
                c = sibling[c]
            if c == -1:
                c = nodes
                nodes += 1
                tok[c], par[c] = ctx[j], node
                sibling[c], first[node] = first[node], c
            child_w[node] += w
            weight[c] += w
            node = c
    # Children are created after their parent, so one forward pass gives path probabilities.
    score = np.empty(nodes, np.float64)
    prob = np.empty(nodes, np.float64)
    prob[0] = 1.0
    for i in range(1, nodes):
        score[i] = weight[i] / (child_w[par[i]] + alpha)
        prob[i] = prob[par[i]] * score[i]
    # Top max_nodes by path probability, ties to the earlier node: always a subtree.
    order = np.argsort(-prob[1:], kind="mergesort") + 1
    keep = np.zeros(nodes, np.bool_)
    keep[order[: min(max_nodes, nodes - 1)]] = True
    out = np.full(nodes, -1, np.int64)
    k = 0
    for i in range(1, nodes):
        if keep[i]:
            out[i] = k
            k += 1
    out_tok = np.empty(k, np.int64)
    out_par = np.empty(k, np.int32)
    out_score = np.empty(k, np.float32)
    for i in range(1, nodes):
        if keep[i]:
            out_tok[out[i]] = tok[i]
            out_par[out[i]] = out[par[i]]  # the root maps to -1
            out_score[out[i]] = score[i]
    return out_tok, out_par, out_score


class PromptLookupDrafter(Drafter):
    """All earlier occurrences of the last n tokens (min_ngram <= n <= max_ngram), merged.

    max_matches   continuations merged, longest match first, then most recent
    length_base   a match of length m weighs length_base ** (m - 1)
    alpha         pseudo-weight of "none of these" at every branch
    """

    name = "prompt-lookup"

    def __init__(
        self,
        min_ngram: int = 1,
        max_ngram: int = 8,
        max_matches: int = 64,
        length_base: float = 4.0,
        alpha: float = 1.0,
    ):
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError(f"need 1 <= min_ngram <= max_ngram, got {min_ngram}, {max_ngram}")
        self.min_ngram, self.max_ngram, self.max_matches = min_ngram, max_ngram, max_matches
        self.length_base, self.alpha = float(length_base), float(alpha)
        self._ctx: RequestStates = RequestStates()  # request id -> token buffer
        self._len: dict[str, int] = {}

    def start(self, request_id: str, prompt_ids: Sequence[int]) -> None:
        ids = np.asarray(prompt_ids, np.int64)
        buf = np.empty(max(1024, 2 * len(ids)), np.int64)
        buf[: len(ids)] = ids
        self._ctx.begin(request_id, buf)
        self._len[request_id] = len(ids)

    def propose(self, request_id: str, budget: TreeBudget) -> DraftTree:
        if budget.max_nodes == 0 or budget.max_depth == 0:
            return DraftTree.empty()
        tok, par, score = _propose(
            self._ctx[request_id], self._len[request_id], self.min_ngram, self.max_ngram,
            self.max_matches, budget.max_nodes, budget.max_depth, self.length_base, self.alpha,
        )
        return DraftTree.unchecked(tok, par, score)

    def update(self, request_id: str, accepted_ids: Sequence[int]) -> None:
        ids = np.asarray(accepted_ids, np.int64)
        buf, n = self._ctx[request_id], self._len[request_id]
        if n + len(ids) > len(buf):  # amortised doubling
            buf = np.concatenate([buf[:n], np.empty(max(n, len(ids)), np.int64)])
            self._ctx[request_id] = buf
        buf[n : n + len(ids)] = ids
        self._len[request_id] = n + len(ids)

    def stop(self, request_id: str) -> None:
        self._ctx.end(request_id)
        del self._len[request_id]

    def context(self, request_id: str) -> np.ndarray:
        """The request's tokens so far (a view)."""
        return self._ctx[request_id][: self._len[request_id]]


# Compile (or load from cache) at import, as vLLM warms its n-gram kernel at start-up.
_propose(np.array([1, 2, 1, 2], np.int64), 4, 1, 2, 4, 4, 4, 4.0, 1.0)
