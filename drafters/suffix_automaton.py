"""Suffix automaton drafter: the longest earlier match of the context's suffix in O(1).

An online suffix automaton over prompt + output (one per request). The state of
the whole context is `last`; its suffix link is the state of the longest suffix
that also ends earlier, so the match is read off, never searched for, and propose
costs O(budget x max_branch), whatever the context length. A state's occurrence count
(|endpos|) gives branch probabilities: P(a | matched suffix S) is estimated as
count(S·a) / (sum over b of count(S·b) + alpha).

Transitions live in one edge pool (token, target, next sibling) with a per-state
list, plus an open-addressing hash on (state, token) for the O(1) lookups the
construction needs: no dense [states, vocab] table, so a 49k or 256k vocabulary
costs nothing extra.

>>> d = SuffixAutomatonDrafter()
>>> d.start("r", [1, 2, 3, 4, 1, 2])
>>> d.match_length("r")
2
>>> t = d.propose("r", TreeBudget(8, 4))
>>> t.paths(), t.scores.tolist()
([[3, 4, 1, 2]], [0.5, 0.5, 0.5, 0.5])
>>> d.update("r", [3, 9]); d.match_length("r")
0
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit

from .base import Drafter, RequestStates
from .heap_kernels import heap_pop, heap_push
from .tree import DraftTree, TreeBudget

# columns of the int32 state table st[cap_states, 4] (a state's fields share a cache line)
LEN, LINK, CNT, FIRST = 0, 1, 2, 3
# columns of the int32 edge pool ed[cap_edges, 3]
TOK, TO, NEXT = 0, 1, 2
# slots of the int64 meta[4]
N_STATES, N_EDGES, LAST, N_TOKENS = 0, 1, 2, 3


@njit(cache=True, inline="always")
def _slot(key, mask):
    x = np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)
    x ^= x >> np.uint64(29)
    return np.int64(x & np.uint64(mask))


@njit(cache=True)
def _find(hk, hv, s, c):
    """Edge index of transition (s, c), or -1."""
    key = (np.int64(s) << 32) | np.int64(c)
    mask = len(hk) - 1
    i = _slot(key, mask)
    while True:
        k = hk[i]
        if k == key:
            return hv[i]
        if k == -1:
            return -1
        i = (i + 1) & mask


@njit(cache=True)
def _hash_insert(hk, hv, s, c, e):
    key = (np.int64(s) << 32) | np.int64(c)
    mask = len(hk) - 1
    i = _slot(key, mask)
    while hk[i] != -1:
        i = (i + 1) & mask
    hk[i] = key
    hv[i] = e


@njit(cache=True)
def _add_edge(st, ed, hk, hv, meta, s, c, to):
    e = meta[N_EDGES]
    meta[N_EDGES] = e + 1
    ed[e, TOK] = c
    ed[e, TO] = to
    ed[e, NEXT] = st[s, FIRST]
    st[s, FIRST] = e
    _hash_insert(hk, hv, s, c, e)


@njit(cache=True)
def _copy_edges(st, ed, hk, hv, meta, src, dst):
    """Give dst the transitions of src, in the same (newest-first) order."""
    tail = -1
    e = st[src, FIRST]
    while e != -1:
        f = meta[N_EDGES]
        meta[N_EDGES] = f + 1
        ed[f, TOK], ed[f, TO], ed[f, NEXT] = ed[e, TOK], ed[e, TO], -1
        if tail == -1:
            st[dst, FIRST] = f
        else:
            ed[tail, NEXT] = f
        tail = f
        _hash_insert(hk, hv, dst, ed[e, TOK], f)
        e = ed[e, NEXT]


@njit(cache=True)
def _rehash(st, ed, hk, hv, n_states):
    hk[:] = -1
    for s in range(n_states):
        e = st[s, FIRST]
        while e != -1:
            _hash_insert(hk, hv, s, ed[e, TOK], e)
            e = ed[e, NEXT]


@njit(cache=True)
def _append(st, ed, hk, hv, meta, tokens, count_depth):
    """Extend the automaton by `tokens` (the classic online construction).

    Capacity is the caller's job: states <= 2n + 1 and edges <= 3n + 4 always hold.
    Occurrence counts are pushed up the suffix-link chain of each new state, at most
    `count_depth` links: the chain is short on text (one state per distinct count),
    and the cap keeps degenerate runs like "aaaa..." O(1) per token.
    """
    for t in range(len(tokens)):
        c = tokens[t]
        last = meta[LAST]
        cur = meta[N_STATES]
        meta[N_STATES] = cur + 1
        st[cur, LEN] = st[last, LEN] + 1
        st[cur, CNT] = 0
        st[cur, FIRST] = -1
        p = last
        while p != -1 and _find(hk, hv, p, c) == -1:
            _add_edge(st, ed, hk, hv, meta, p, c, cur)
            p = st[p, LINK]
        if p == -1:
            st[cur, LINK] = 0
        else:
            q = ed[_find(hk, hv, p, c), TO]
            if st[p, LEN] + 1 == st[q, LEN]:
                st[cur, LINK] = q
            else:
                clone = meta[N_STATES]
                meta[N_STATES] = clone + 1
                st[clone, LEN] = st[p, LEN] + 1
                st[clone, LINK] = st[q, LINK]
                st[clone, CNT] = st[q, CNT]
                st[clone, FIRST] = -1
                _copy_edges(st, ed, hk, hv, meta, q, clone)
                while p != -1:
                    e = _find(hk, hv, p, c)
                    if ed[e, TO] != q:
                        break
                    ed[e, TO] = clone
                    p = st[p, LINK]
                st[q, LINK] = clone
                st[cur, LINK] = clone
        meta[LAST] = cur
        meta[N_TOKENS] += 1
        p = cur
        k = 0
        while p > 0 and k < count_depth:
            st[p, CNT] += 1
            p = st[p, LINK]
            k += 1


@njit(cache=True, inline="always")
def _push_children(st, ed, cand, n_cand, heap, n_heap, s, parent, depth, base, alpha, limit, tok, to, cnt, order):
    """Push the `limit` most frequent of the `max_branch` newest continuations of state s.

    A frequent token has thousands of successors in a long context, and each edge
    visited is a cache miss (~0.5 ms for 2,300 edges at 128k tokens, measured), so
    only the newest max_branch transitions are read; branch shares are taken among them.
    Candidate c is the row cand[c] = (path probability, state, parent, token, depth, score);
    tok, to, cnt and order are scratch arrays of length max_branch.
    Returns the new (n_cand, n_heap).
    """
    if limit <= 0:
        return n_cand, n_heap
    k, total = 0, 0.0
    e = st[s, FIRST]
    while e != -1 and k < len(tok):
        tok[k], to[k], cnt[k] = ed[e, TOK], ed[e, TO], st[ed[e, TO], CNT]
        total += cnt[k]
        e, k = ed[e, NEXT], k + 1
    # The heap orders what is pushed (ties by push order = newest first); rank by count only
    # to cut: the `limit` largest counts, ties to the newer edge (a stable sort's first `limit`).
    m = k
    if k > limit:
        m = 0
        for i in range(k):
            j = m
            while j > 0 and cnt[order[j - 1]] < cnt[i]:
                j -= 1
            if j == limit:
                continue
            for q in range(min(m, limit - 1), j, -1):
                order[q] = order[q - 1]
            order[j] = i
            m = min(m + 1, limit)
    else:
        for i in range(k):
            order[i] = i
    for j in range(m):
        i = order[j]
        if cnt[i] == 0:  # possible only past count_depth
            break
        score = cnt[i] / (total + alpha)
        cand[n_cand, 0], cand[n_cand, 1], cand[n_cand, 2] = base * score, to[i], parent
        cand[n_cand, 3], cand[n_cand, 4], cand[n_cand, 5] = tok[i], depth, score
        n_heap = heap_push(heap, n_heap, cand[:, 0], n_cand)
        n_cand += 1
    return n_cand, n_heap


@njit(cache=True)
def _propose(st, ed, meta, max_nodes, max_depth, alpha, min_match, max_branch):
    """Best-first expansion of the matched state's continuations, up to the budget."""
    tok = np.empty(max_nodes, np.int64)
    par = np.empty(max_nodes, np.int32)
    score = np.empty(max_nodes, np.float32)
    last = meta[LAST]
    v = st[last, LINK] if last > 0 else -1
    if v < 0 or st[v, LEN] < max(min_match, 1) or max_nodes == 0 or max_depth == 0:
        return tok[:0], par[:0], score[:0]
    # Room for every push: the root's children, then each drafted node n's (at most max_nodes - n - 1).
    cap = min(max_branch, max_nodes)
    for n in range(max_nodes):
        cap += min(max_branch, max_nodes - n - 1)
    cand = np.empty((cap, 6), np.float64)
    heap = np.empty(cap, np.int64)
    btok, bto, bcnt = np.empty(max_branch, np.int64), np.empty(max_branch, np.int64), np.empty(max_branch)
    border = np.empty(max_branch, np.int64)
    n_cand, n_heap = _push_children(st, ed, cand, 0, heap, 0, v, -1, 1, 1.0, alpha, max_nodes,
                                    btok, bto, bcnt, border)
    n = 0
    while n < max_nodes and n_heap > 0:
        c, n_heap = heap_pop(heap, n_heap, cand[:, 0])
        tok[n] = np.int64(cand[c, 3])
        par[n] = np.int32(cand[c, 2])
        score[n] = np.float32(cand[c, 5])
        depth = np.int64(cand[c, 4])
        if depth < max_depth:
            n_cand, n_heap = _push_children(
                st, ed, cand, n_cand, heap, n_heap, np.int64(cand[c, 1]), n, depth + 1, cand[c, 0], alpha,
                max_nodes - n - 1, btok, bto, bcnt, border,
            )
        n += 1
    return tok[:n], par[:n], score[:n]


class _Automaton:
    """One request's automaton: numpy tables that numba grows in place."""

    def __init__(self, cap_tokens: int = 1024):
        self.st = np.zeros((0, 4), np.int32)
        self.ed = np.zeros((0, 3), np.int32)
        self.hk = np.full(0, -1, np.int64)
        self.hv = np.zeros(0, np.int32)
        self.meta = np.zeros(4, np.int64)
        self.reserve(cap_tokens)
        self.meta[N_STATES] = 1  # the root: empty string, no link
        self.st[0] = (0, -1, 0, -1)

    def reserve(self, n_tokens: int) -> None:
        """Room for n_tokens in all: <= 2n+1 states and <= 3n+4 edges (suffix automaton bounds)."""
        if 2 * n_tokens + 1 <= len(self.st):
            return
        n_tokens = max(n_tokens, len(self.st))  # at least double
        st = np.empty((2 * n_tokens + 1, 4), np.int32)
        st[: len(self.st)] = self.st
        ed = np.empty((3 * n_tokens + 4, 3), np.int32)
        ed[: len(self.ed)] = self.ed
        n_hash = 1 << int(np.ceil(np.log2(2 * len(ed))))  # load factor <= 1/2
        self.st, self.ed = st, ed
        self.hk, self.hv = np.empty(n_hash, np.int64), np.empty(n_hash, np.int32)
        _rehash(self.st, self.ed, self.hk, self.hv, int(self.meta[N_STATES]))

    def extend(self, tokens, count_depth: int) -> None:
        tokens = np.asarray(tokens, np.int64)
        if len(tokens):
            self.reserve(int(self.meta[N_TOKENS]) + len(tokens))
            _append(self.st, self.ed, self.hk, self.hv, self.meta, tokens, count_depth)


class SuffixAutomatonDrafter(Drafter):
    """Drafts the continuations of the longest earlier match of the context's suffix.

    alpha        pseudo-count of "something never seen" in every branch estimate
    min_match    propose nothing when the longest earlier match is shorter
    count_depth  suffix links an occurrence count is pushed up per token (see _append)
    max_branch   transitions read per state in propose, newest first (see _push_children)
    """

    name = "suffix"

    def __init__(self, alpha: float = 1.0, min_match: int = 1, count_depth: int = 256, max_branch: int = 64):
        self.alpha, self.min_match, self.count_depth = float(alpha), int(min_match), int(count_depth)
        self.max_branch = int(max_branch)
        self._req: RequestStates = RequestStates()  # request id -> its automaton

    def start(self, request_id: str, prompt_ids: Sequence[int]) -> None:
        sam = _Automaton(max(1024, 2 * len(prompt_ids)))
        sam.extend(prompt_ids, self.count_depth)
        self._req.begin(request_id, sam)

    def propose(self, request_id: str, budget: TreeBudget) -> DraftTree:
        s = self._req[request_id]
        tok, par, score = _propose(
            s.st, s.ed, s.meta, budget.max_nodes, budget.max_depth, self.alpha, self.min_match, self.max_branch
        )
        return DraftTree.unchecked(tok, par, score)

    def update(self, request_id: str, accepted_ids: Sequence[int]) -> None:
        self._req[request_id].extend(accepted_ids, self.count_depth)

    def stop(self, request_id: str) -> None:
        self._req.end(request_id)

    def match_length(self, request_id: str) -> int:
        """Length of the longest suffix of the context that also ends earlier in it."""
        s = self._req[request_id]
        last = int(s.meta[LAST])
        return int(s.st[s.st[last, LINK], LEN]) if last > 0 else 0


# Compile (or load from cache) at import, as vLLM warms its n-gram kernel at start-up.
_warm = _Automaton(4)
_warm.extend([1, 2, 1, 2, 3], 8)
_propose(_warm.st, _warm.ed, _warm.meta, 4, 4, 1.0, 1, 8)
del _warm
