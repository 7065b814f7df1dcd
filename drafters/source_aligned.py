"""Source-aligned drafting for rewriting tasks (input-guided aggressive decoding).

Grammar correction copies its input with a few edits. The drafter keeps a
pointer into the source and drafts the source from there. When the output
leaves the source (an edit), it drafts every resynchronisation at once: the
source after a substitution (skip as many source tokens as the edit emitted), after
an insertion (the source token still comes next) or after a deletion (skip more),
so drafting resumes right after the edit instead of waiting for an n-gram match.

Source "a b c d e" = [1, 2, 3, 4, 5]; the output starts "a X" (X = 9 replaced b):

>>> d = SourceAlignedDrafter()
>>> d.start("r", [0, 0]); d.set_source("r", [1, 2, 3, 4, 5])
>>> d.propose("r", TreeBudget(4, 4)).paths()        # in sync: the source from 0
[[1, 2, 3, 4]]
>>> d.update("r", [1, 9])                            # "a", then the edit "X"
>>> sorted(d.propose("r", TreeBudget(16, 3)).paths())   # substitution, insertion, deletions
[[2, 3, 4], [3, 4, 5], [4, 5], [5]]
>>> d.update("r", [3, 4]); d.propose("r", TreeBudget(1, 4)).paths()   # back in sync
[[5]]
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from .base import Drafter, RequestStates
from .tree import DraftTree, TreeBudget
from .tree_kernels import prune

__all__ = ["SourceAlignedDrafter"]

# Prior acceptance probabilities; the Calibrated wrapper rescales them online.
CHAIN_SCORE = 0.9  # a token of the source continuing an aligned stretch
SKIP_SCORE = 0.05  # first token after skipping source tokens while in sync (a deletion)
RESYNC_SCORES = (0.5, 0.2, 0.1)  # first token of the most, second, other likely resyncs


@njit(cache=True)
def _resync_offsets(edit_len, max_skip):
    """Source tokens an edit of `edit_len` >= 1 output tokens may have replaced, likeliest first:
    as many (substitution), none (insertion), more (with deletion), fewer."""
    out = np.empty(1 + max_skip + edit_len, np.int64)
    out[0], out[1] = edit_len, 0
    for k in range(1, max_skip + 1):
        out[1 + k] = edit_len + k
    for j in range(1, edit_len):
        out[1 + max_skip + j] = j
    return out


@njit(cache=True)
def _propose(source, pointer, edit_len, max_skip, max_nodes, max_depth):
    """The trie of the source from every start the alignment allows, pruned to the budget.

    A start's first token is scored by how likely the start is, the rest CHAIN_SCORE; where
    starts share tokens the first start's scores stay.
    """
    if edit_len == 0:  # in sync: a copy, or a deletion of k source tokens before a copy
        starts = pointer + np.arange(max_skip + 1)
        firsts = np.full(len(starts), SKIP_SCORE)
        firsts[0] = CHAIN_SCORE
    else:
        starts = pointer + _resync_offsets(edit_len, max_skip)
        firsts = np.full(len(starts), RESYNC_SCORES[2])
        firsts[0], firsts[1] = RESYNC_SCORES[0], RESYNC_SCORES[1]
    cap = len(starts) * max_depth
    tok = np.empty(cap, np.int64)
    par = np.empty(cap, np.int32)
    score = np.empty(cap, np.float32)
    first = np.full(cap + 1, -1, np.int64)  # first child of node i at first[i + 1]; the root's at first[0]
    sibling = np.empty(cap, np.int64)
    n = 0
    for k in range(len(starts)):
        node = -1
        for j in range(starts[k], min(starts[k] + max_depth, len(source))):
            c = first[node + 1]
            while c != -1 and tok[c] != source[j]:
                c = sibling[c]
            if c == -1:
                c = n
                n += 1
                tok[c], par[c], score[c] = source[j], node, firsts[k] if j == starts[k] else CHAIN_SCORE
                sibling[c], first[node + 1] = first[node + 1], c
            node = c
    tok, par, score, _ = prune(tok[:n], par[:n], score[:n], max_nodes, max_depth)  # valid by construction
    return tok, par, score


@dataclass
class _Request:
    source: np.ndarray  # int64 [S]
    output: list[int] = field(default_factory=list)
    pointer: int | None = None  # next expected source index; None = not aligned yet
    edit_len: int = 0  # output tokens since the source was left at `pointer`; 0 = in sync


class SourceAlignedDrafter(Drafter):
    """Drafts the request's source (default: its prompt) from an alignment pointer.

    max_skip: source tokens a deletion may skip (also extra skips after an edit).
    max_edit: edit length after which the pointer is searched in the whole source.
    realign_len: longest output tail matched when searching the whole source.
    """

    name = "source"

    def __init__(self, max_skip: int = 2, max_edit: int = 6, realign_len: int = 4):
        self.max_skip, self.max_edit, self.realign_len = max_skip, max_edit, realign_len
        self._requests: RequestStates = RequestStates()  # request id -> _Request

    def start(self, request_id: str, prompt_ids: Sequence[int]) -> None:
        # The output's start within the prompt is unknown until it matches there.
        self._requests.begin(request_id, _Request(np.asarray(prompt_ids, np.int64)))

    def set_source(self, request_id: str, source_ids: Sequence[int]) -> None:
        """Draft from `source_ids` (e.g. the text to correct) instead of the prompt."""
        r = self._requests[request_id]
        r.source, r.edit_len = np.asarray(source_ids, np.int64), 0
        r.pointer = 0 if not r.output else self._realign(r, 0)

    def propose(self, request_id: str, budget: TreeBudget) -> DraftTree:
        r = self._requests[request_id]
        if r.pointer is None or budget.max_nodes == 0 or budget.max_depth == 0:
            return DraftTree.empty()
        tokens, parents, scores = _propose(r.source, r.pointer, r.edit_len, self.max_skip,
                                           budget.max_nodes, budget.max_depth)
        return DraftTree.unchecked(tokens, parents, scores)

    def update(self, request_id: str, accepted_ids: Sequence[int]) -> None:
        r = self._requests[request_id]
        for t in accepted_ids:
            r.output.append(int(t))
            self._step(r, int(t))

    def stop(self, request_id: str) -> None:
        self._requests.end(request_id)

    # ---- alignment ------------------------------------------------------------------
    def _step(self, r: _Request, t: int) -> None:
        src, p = r.source, r.pointer
        if p is None:
            r.pointer = self._realign(r, 0)
            return
        if r.edit_len == 0:
            # In sync: a copy, or a deletion of k source tokens before a copy.
            for k in range(self.max_skip + 1):
                if p + k < len(src) and src[p + k] == t:
                    r.pointer = p + k + 1
                    return
            r.edit_len = 1
            return
        # Inside an edit: does t resume the source after one of the possible skips?
        for j in _resync_offsets(r.edit_len, self.max_skip).tolist():
            if p + j < len(src) and src[p + j] == t:
                r.pointer, r.edit_len = p + j + 1, 0
                return
        r.edit_len += 1
        if r.edit_len > self.max_edit:  # lost near the pointer: look everywhere
            q = self._realign(r, p)
            if q is not None:
                r.pointer, r.edit_len = q, 0

    def _realign(self, r: _Request, hint: int) -> int | None:
        """Source index after the longest output tail (2..realign_len tokens, or the whole
        output when shorter) found in the source; the occurrence nearest `hint` wins."""
        out, src = r.output, r.source
        for n in range(min(self.realign_len, len(out)), min(2, len(out)) - 1, -1):
            if n == 0 or n > len(src):
                continue
            windows = np.lib.stride_tricks.sliding_window_view(src, n)
            ends = np.flatnonzero((windows == np.asarray(out[-n:])).all(axis=1)) + n
            if len(ends):
                return int(ends[np.argmin(np.abs(ends - hint))])
        return None


# Compile (or load from cache) at import, as the other drafters warm their kernels.
_propose(np.array([1, 2, 3], np.int64), 0, 1, 2, 4, 4)
