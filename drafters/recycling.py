"""Drafts from the target's own candidates: for every token, the target's likeliest next tokens the last
time it was committed (Token Recycling's adjacency matrix, kept across requests).

Each committed position's logits name the target's k likeliest next tokens there (the engine passes
them, `observe_successors`); they are stored under the token at that position, replacing what was there.
To draft, the tree grows best first from the request's last token: a node's children are its token's
stored successors, a child of rank r scoring RANK_PRIOR[r] times its parent's path score, until the
budget's nodes or depth run out. Only committed positions feed it, whose logits plain decoding computes
too, so it drafts the same with or without speculation (and replays from a trace's recorded successors).

>>> import numpy as np
>>> d = TokenRecyclingDrafter()
>>> d.start("r", [1, 2])
>>> d.observe_successors("r", np.array([[3, 4], [5, 6]])); d.update("r", [3, 5])  # after 2: 3 or 4; after 3: 5 or 6
>>> d.start("s", [7, 2])
>>> d.propose("s", TreeBudget(3, 2)).paths()  # from 2: 3 (then 5), or 4
[[3, 5], [4]]
"""
from __future__ import annotations

import heapq
from collections.abc import Sequence

import numpy as np
from numba import njit

from .base import Drafter, RequestStates
from .tree import DraftTree, TreeBudget

K = 8  # successors kept per token (the target's likeliest)
# Raw score of a child by its rank among its parent's successors; Calibrated maps these to observed
# acceptance per depth, so only their order matters much.
RANK_PRIOR = np.array([0.6, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01, 0.01])


@njit(cache=True)
def _grow(succ, root, max_nodes, max_depth, prior):
    """Best-first tree from `root` over the successor table succ [V, K] (-1: none): tokens, parents, scores."""
    tokens = np.empty(max_nodes, np.int64)
    parents = np.empty(max_nodes, np.int32)
    scores = np.empty(max_nodes, np.float32)
    depth = np.empty(max_nodes, np.int64)
    heap = [(0.0, 0, 0, 0, 0.0)]  # (-path score, order pushed, parent, token, own score): typed, then emptied
    heap.pop()
    order = 0
    for r in range(succ.shape[1] if root < succ.shape[0] else 0):
        if succ[root, r] < 0:
            break
        heapq.heappush(heap, (-prior[r], order, -1, succ[root, r], prior[r]))
        order += 1
    n = 0
    while n < max_nodes and len(heap) > 0:
        neg, _, parent, token, own = heapq.heappop(heap)
        tokens[n], parents[n], scores[n] = token, parent, own
        depth[n] = 1 if parent < 0 else depth[parent] + 1
        if depth[n] < max_depth and token < succ.shape[0]:
            for r in range(succ.shape[1]):
                if succ[token, r] < 0:
                    break
                heapq.heappush(heap, (neg * prior[r], order, n, succ[token, r], prior[r]))
                order += 1
        n += 1
    return tokens[:n], parents[:n], scores[:n]


class TokenRecyclingDrafter(Drafter):
    """One successor table for every request (a token's successors do not depend on who committed it)."""

    name = "recycling"
    successors_wanted = K

    def __init__(self):
        self.succ = np.full((0, K), -1, np.int64)
        self.requests = RequestStates()

    def start(self, request_id: str, prompt_ids: Sequence[int]) -> None:
        self.requests.begin(request_id, {"last": int(prompt_ids[-1]), "pending": None})

    def observe_successors(self, request_id: str, successors) -> None:
        self.requests[request_id]["pending"] = np.asarray(successors, np.int64)

    def update(self, request_id: str, accepted_ids: Sequence[int]) -> None:
        state = self.requests[request_id]
        pending, state["pending"] = state["pending"], None
        if pending is not None and len(accepted_ids):
            at = np.array([state["last"], *accepted_ids[:-1]], np.int64)[: len(pending)]
            self._store(at, pending[: len(at)])
        if len(accepted_ids):
            state["last"] = int(accepted_ids[-1])

    def propose(self, request_id: str, budget: TreeBudget) -> DraftTree:
        state = self.requests[request_id]
        if budget.max_nodes == 0 or budget.max_depth == 0:
            return DraftTree.empty()
        tokens, parents, scores = _grow(self.succ, state["last"], budget.max_nodes, budget.max_depth, RANK_PRIOR)
        return DraftTree.unchecked(tokens, parents, scores)

    def stop(self, request_id: str) -> None:
        self.requests.end(request_id)

    def _store(self, tokens: np.ndarray, rows: np.ndarray) -> None:
        need = int(max(tokens.max(), rows.max())) + 1
        if need > len(self.succ):  # grow to the largest id seen, doubling
            grown = np.full((max(need, 2 * len(self.succ)), K), -1, np.int64)
            grown[: len(self.succ)] = self.succ
            self.succ = grown
        self.succ[tokens, : rows.shape[1]] = rows
        self.succ[tokens, rows.shape[1]:] = -1
