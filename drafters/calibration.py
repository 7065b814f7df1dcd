"""Drafter scores calibrated online against what the target actually accepted.

The controller multiplies scores along paths and compares the result with step
costs, so it needs probabilities, not ranks. The target's committed tokens
(accepted drafts + bonus token) are its true next tokens, so walking the proposed
tree along them labels every node whose parent lies on that walk (or is the root):
right if its token is the true one, wrong otherwise. Nodes deeper than the walk
are unobserved. Labels accumulate per (depth, raw-score bucket); a calibrated
score is the posterior mean under a Beta prior centred on the raw score, so a
new bin starts at the raw score and moves toward the observed rate.

>>> cal = OnlineCalibrator(prior_strength=4)
>>> t = DraftTree.chain([5, 6], [0.9, 0.9])
>>> [round(s, 2) for s in cal.calibrate(t).scores.tolist()]
[0.9, 0.9]
>>> for _ in range(20):
...     cal.observe(t, [5, 7])  # 5 was right; the target then chose 7, not 6
>>> [round(s, 2) for s in cal.calibrate(t).scores.tolist()]
[0.98, 0.15]
>>> [(s["depth"], s["observed"], s["rate"]) for s in cal.stats()]
[(1, 20, 1.0), (2, 20, 0.0)]
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit

from .base import Drafter
from .tree import DraftTree, TreeBudget
from .tree_kernels import depths


@njit(cache=True, inline="always")
def _bin(depth, score, max_depth, n_buckets):
    """(depth bin, raw-score bucket) of a node; the bucket from the float32 product, as numpy."""
    return min(depth, max_depth) - 1, min(np.int64(score * np.float32(n_buckets)), n_buckets - 1)


@njit(cache=True)
def _calibrate(parents, scores, pos, neg, prior_strength):
    """float32 [N]: the posterior mean of each node's bin, under a Beta prior centred on its raw score."""
    max_depth, n_buckets = pos.shape
    depth = depths(parents)
    out = np.empty(len(scores), np.float32)
    for i in range(len(scores)):
        d, b = _bin(depth[i], scores[i], max_depth, n_buckets)
        out[i] = (pos[d, b] + prior_strength * np.float64(scores[i])) / (pos[d, b] + neg[d, b] + prior_strength)
    return out


@njit(cache=True)
def _observe(tokens, parents, scores, accepted, pos, neg, raw_sum, cal_sum, prior_strength):
    """Label the nodes of the tree's walk along `accepted` and count them into the tables in place."""
    max_depth, n_buckets = pos.shape
    n = len(tokens)
    labelled = np.empty(n, np.int64)  # the children of each node on the walk, level by level
    right = np.zeros(n, np.bool_)
    m, cur = 0, -1
    for tok in accepted:
        level, nxt = m, -1
        for i in range(n):
            if parents[i] == cur:
                labelled[m] = i
                if tokens[i] == tok and nxt == -1:
                    right[m], nxt = True, i
                m += 1
        if m == level or nxt == -1:
            break
        cur = nxt
    depth = depths(parents)
    for j in range(m):  # every score against the tables as they were before this tree
        i = labelled[j]
        d, b = _bin(depth[i], scores[i], max_depth, n_buckets)
        raw = np.float64(scores[i])
        cal_sum[d] += (pos[d, b] + prior_strength * raw) / (pos[d, b] + neg[d, b] + prior_strength)
        raw_sum[d] += raw
    for j in range(m):
        i = labelled[j]
        d, b = _bin(depth[i], scores[i], max_depth, n_buckets)
        if right[j]:
            pos[d, b] += 1.0
        else:
            neg[d, b] += 1.0


class OnlineCalibrator:
    """Acceptance counts per (depth, raw-score bucket) and the scores they imply.

    max_depth       deeper nodes share the last depth bin
    n_buckets       raw scores fall into n_buckets equal bins of [0, 1]
    prior_strength  pseudo-observations behind the raw score (Beta prior weight)
    """

    def __init__(self, max_depth: int = 16, n_buckets: int = 10, prior_strength: float = 8.0):
        self.max_depth, self.n_buckets, self.prior_strength = max_depth, n_buckets, float(prior_strength)
        self.pos = np.zeros((max_depth, n_buckets))
        self.neg = np.zeros((max_depth, n_buckets))
        self.raw_sum = np.zeros(max_depth)  # for stats: mean raw score of observed nodes
        self.cal_sum = np.zeros(max_depth)  # and the calibrated score they were given

    def calibrate(self, tree: DraftTree) -> DraftTree:
        """The same tree with calibrated scores."""
        if len(tree) == 0:
            return tree
        scores = _calibrate(tree.parents, tree.scores, self.pos, self.neg, self.prior_strength)
        return DraftTree.unchecked(tree.tokens, tree.parents, scores)  # same shape, scores in [0, 1]

    def observe(self, tree: DraftTree, accepted_ids: Sequence[int]) -> None:
        """Learn from the target's next tokens `accepted_ids` after proposing `tree`."""
        if len(tree):
            _observe(tree.tokens, tree.parents, tree.scores, np.asarray(accepted_ids, np.int64),
                     self.pos, self.neg, self.raw_sum, self.cal_sum, self.prior_strength)

    def stats(self) -> list[dict]:
        """Per observed depth: nodes observed, acceptance rate, mean raw and calibrated score."""
        out = []
        for d in range(self.max_depth):
            pos, n = self.pos[d].sum(), self.pos[d].sum() + self.neg[d].sum()
            if n:
                out.append({
                    "depth": d + 1, "observed": int(n), "rate": float(pos / n),
                    "mean_raw": float(self.raw_sum[d] / n), "mean_calibrated": float(self.cal_sum[d] / n),
                })
        return out


class Calibrated(Drafter):
    """A drafter whose scores are calibrated online from its own update() calls.

    It remembers the last tree proposed per request (before any pruning by the
    controller: the committed tokens are the truth whatever was verified) and
    observes it against the tokens passed to update().
    """

    def __init__(self, drafter: Drafter, calibrator: OnlineCalibrator | None = None):
        self.drafter = drafter
        self.calibrator = calibrator or OnlineCalibrator()
        self.name = drafter.name
        self.successors_wanted = drafter.successors_wanted
        self._last: dict[str, DraftTree] = {}

    def start(self, request_id: str, prompt_ids: Sequence[int]) -> None:
        self._last.pop(request_id, None)
        self.drafter.start(request_id, prompt_ids)

    def propose(self, request_id: str, budget: TreeBudget) -> DraftTree:
        raw = self.drafter.propose(request_id, budget)
        self._last[request_id] = raw
        return self.calibrator.calibrate(raw)

    def update(self, request_id: str, accepted_ids: Sequence[int]) -> None:
        raw = self._last.pop(request_id, None)
        if raw is not None:
            self.calibrator.observe(raw, accepted_ids)
        self.drafter.update(request_id, accepted_ids)

    def stop(self, request_id: str) -> None:
        self._last.pop(request_id, None)
        self.drafter.stop(request_id)

    def set_source(self, request_id: str, source_ids: Sequence[int]) -> None:
        self.drafter.set_source(request_id, source_ids)

    def observe_successors(self, request_id: str, successors) -> None:
        self.drafter.observe_successors(request_id, successors)

    def stats(self) -> list[dict]:
        return self.calibrator.stats()


# Compile (or load from cache) at import, as the drafters warm their kernels.
_warm = OnlineCalibrator(max_depth=2, n_buckets=2)
_warm.observe(_warm.calibrate(DraftTree.chain([1, 2], [0.5, 0.5])), [1, 3])
del _warm
