"""Truncated suffix array over token ids, and the REST-style lookups on it (numba).

The text is documents joined by a -1 separator and ending with one, e.g. two
documents [5, 6, 5] and [6, 5]:

    position  0  1  2   3  4  5   6
    token     5  6  5  -1  6  5  -1

Suffixes are sorted by their first `key_len` tokens only (reads past the end sort
below every token); that is all a lookup needs, because a query plus the continuation it
drafts never spans more than `key_len` tokens, and it makes the build a fixed
number of prefix-doubling rounds however repetitive the corpus is.

>>> import numpy as np
>>> text = np.array([5, 6, 5, -1, 6, 5, -1], np.int32)
>>> sa = build_suffix_array(text, 4)
>>> sa.tolist()   # separators first; "5 -1" before "5 6"
[6, 3, 5, 2, 0, 4, 1]
>>> match_range(text, sa, 0, 7, np.array([6, 5], np.int32))   # "6 5" occurs twice
(5, 7)
>>> tokens, parents, scores, m = draft_tree(
...     text, sa, np.array([0, 7]), np.array([9, 6], np.int32), 8, 4, 8, 4, 64, 4)
>>> m, tokens.tolist(), [round(float(x), 2) for x in scores]   # after "6": "5" twice, then both end
(1, [5], [0.67])
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .heap_kernels import heap_pop, heap_push


@njit(cache=True)
def build_suffix_array(text, key_len):
    """Positions of `text` (int32, separators -1) sorted by their first `key_len` tokens.

    Manber–Myers prefix doubling: each round orders suffixes by 2h tokens from the
    order by h tokens with one stable counting sort, so a round is three linear
    passes (whole build at key_len 32, one core: 6.8M tokens/s at 1M tokens, 2.2M
    at 10M where the random accesses miss the cache; an np.argsort per round
    would take ~2 s per round at 10M alone).
    """
    n = len(text)
    sa = np.empty(n, np.int32)
    if n == 0:
        return sa
    # Round 0: counting sort by the first token (+1 so the separator is bucket 0).
    top = 0
    for i in range(n):
        top = max(top, text[i] + 1)
    start = np.zeros(top + 2, np.int64)
    for i in range(n):
        start[text[i] + 2] += 1
    for v in range(1, top + 2):
        start[v] += start[v - 1]
    for i in range(n):
        v = text[i] + 1
        sa[start[v]] = i
        start[v] += 1
    # rank[i] = index in sa of the first suffix of i's group (suffixes equal so far).
    rank = np.empty(n, np.int32)  # int32 halves the cache misses of the random passes
    groups = 0
    for j in range(n):
        if j == 0 or text[sa[j]] != text[sa[j - 1]]:
            g = j
            groups += 1
        rank[sa[j]] = g
    by_second = np.empty(n, np.int32)
    fill = np.empty(n, np.int32)
    new_rank = np.empty(n, np.int32)
    h = 1
    while h < key_len and groups < n:
        # Order by the second half (rank of i + h, -1 past the end): the tail first,
        # then everyone else in the current order shifted back by h.
        k = 0
        for i in range(n - h, n):
            by_second[k] = i
            k += 1
        for j in range(n):
            if sa[j] >= h:
                by_second[k] = sa[j] - h
                k += 1
        # Stable counting sort by the first half: each group fills from its start.
        for j in range(n):
            fill[j] = j
        for k in range(n):
            i = by_second[k]
            sa[fill[rank[i]]] = i
            fill[rank[i]] += 1
        groups = 0
        for j in range(n):
            i = sa[j]
            second = rank[i + h] if i + h < n else -1
            if j > 0:
                p = sa[j - 1]
                p_second = rank[p + h] if p + h < n else -1
                if rank[i] != rank[p] or second != p_second:
                    g = j
                    groups += 1
            else:
                g = 0
                groups = 1
            new_rank[i] = g
        rank, new_rank = new_rank, rank
        h *= 2
    return sa


@njit(cache=True, inline="always")
def _compare(text, pos, query):
    """-1 / 0 / +1: the suffix at `pos` is below / starts with / is above `query`."""
    for k in range(len(query)):
        a = text[pos + k]  # a separator ends the suffix before the text ends
        if a != query[k]:
            return -1 if a < query[k] else 1
    return 0


@njit(cache=True)
def match_range(text, sa, lo, hi, query):
    """The index range [l, u) of sa[lo:hi] whose suffixes start with `query`."""
    a, b = lo, hi
    while a < b:  # first suffix >= query
        mid = (a + b) // 2
        if _compare(text, sa[mid], query) < 0:
            a = mid + 1
        else:
            b = mid
    l = a
    b = hi
    while a < b:  # first suffix > query
        mid = (a + b) // 2
        if _compare(text, sa[mid], query) <= 0:
            a = mid + 1
        else:
            b = mid
    return l, a


@njit(cache=True, inline="always")
def _value_bound(text, sa, lo, hi, offset, value, upper):
    """First index in [lo, hi) whose token at `offset` is >= value (> value if upper)."""
    while lo < hi:
        mid = (lo + hi) // 2
        v = text[sa[mid] + offset]
        if v < value or (upper and v == value):
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, inline="always")  # once per node drafted: a call passing 14 arrays cost ~15% of _grow
def _children(text, sa, los, his, offset, key_len, probes, max_children, found, probe, cursor, sub, vals, counts,
              sub_lo, sub_hi):
    """The most frequent next tokens of the suffixes in ranges sa[los[s]:his[s]].

    Each range shares its first `offset` tokens, so (below key_len) it is sorted by
    the token at `offset`: a child is a sub-range found by binary search. A range
    longer than `probes` is sampled at `probes` evenly spaced points, which finds
    every child holding more than 1/probes of it; rarer children are dropped. A
    child's bounds lie between the probes either side of its value, so the binary
    searches run between those (over r / probes suffixes, none at all when r <= probes).
    Writes the first k <= max_children of them, most frequent first, ties toward the
    smaller token id, to vals[:k], counts[:k], sub_lo[:k] and sub_hi[:k] (rows of
    [nseg]) and returns k; `found` (nseg * (probes + 1) + 1), `probe` ([2, nseg, probes]:
    positions and values), `cursor` ([3, nseg]: probes taken, first probe >= and > the
    current value) and `sub` ([2, nseg]) are scratch. Buffers come from the caller: this runs once per node drafted, and
    allocating here cost as much as the searches.
    """
    nseg = len(los)
    total = 0
    for s in range(nseg):
        total += his[s] - los[s]
    nf = 0
    if offset >= key_len:
        # Past the sorted prefix only a single occurrence can still be followed.
        if total == 1:
            for s in range(nseg):
                if his[s] > los[s] and text[sa[los[s]] + offset] >= 0:
                    found[0] = text[sa[los[s]] + offset]
                    nf = 1
    else:
        for s in range(nseg):
            r = his[s] - los[s]
            last = -1
            cursor[0, s], cursor[1, s], cursor[2, s] = min(r, probes), 0, 0
            for j in range(min(r, probes)):
                i = los[s] + (j if r <= probes else (r * j) // probes)
                v = text[sa[i] + offset]
                probe[0, s, j], probe[1, s, j] = i, v
                if v >= 0 and v != last:
                    found[nf] = v
                    nf += 1
                    last = v
    if nf > 16:
        found[:nf].sort()
    else:  # most nodes have one or two: insertion sort, as array.sort's call cost more (retrieval -15% in replay)
        for f in range(1, nf):
            v, g = found[f], f
            while g > 0 and found[g - 1] > v:
                found[g] = found[g - 1]
                g -= 1
            found[g] = v
    k = 0
    for f in range(nf):
        value = found[f]
        if f > 0 and value == found[f - 1]:
            continue
        count = 0
        for s in range(nseg):
            if offset >= key_len:
                sub[0, s], sub[1, s] = los[s], his[s]
            else:  # values arrive in increasing order: the cursors only move forward
                n, ge, gt = cursor[0, s], cursor[1, s], max(cursor[1, s], cursor[2, s])
                while ge < n and probe[1, s, ge] < value:
                    ge += 1
                while gt < n and probe[1, s, gt] <= value:
                    gt += 1
                cursor[1, s], cursor[2, s] = ge, gt
                a = los[s] if ge == 0 else probe[0, s, ge - 1] + 1
                b = his[s] if ge == n else probe[0, s, ge]
                sub[0, s] = _value_bound(text, sa, a, b, offset, value, False)
                a = max(sub[0, s], los[s] if gt == 0 else probe[0, s, gt - 1] + 1)
                b = his[s] if gt == n else probe[0, s, gt]
                sub[1, s] = _value_bound(text, sa, a, b, offset, value, True)
            count += sub[1, s] - sub[0, s]
        # Insert into the kept list by count, after equal counts (values arrive in increasing order).
        c = k
        while c > 0 and counts[c - 1] < count:
            c -= 1
        if c == max_children:
            continue
        for j in range(min(k, max_children - 1), c, -1):
            vals[j], counts[j] = vals[j - 1], counts[j - 1]
            for s in range(nseg):  # element loops: a row assignment checks overlap and may copy
                sub_lo[j, s], sub_hi[j, s] = sub_lo[j - 1, s], sub_hi[j - 1, s]
        vals[c], counts[c] = value, count
        for s in range(nseg):
            sub_lo[c, s], sub_hi[c, s] = sub[0, s], sub[1, s]
        k = min(k + 1, max_children)
    return k


@njit(cache=True)
def _grow(text, sa, los, his, match_len, key_len, max_nodes, max_depth, probes, max_children):
    """Best-first tree of continuations of the ranges (los, his), by path probability.

    A node's score is count / (parent count + 1): the empirical continuation
    frequency, shrunk so that a single occurrence does not claim certainty.
    Candidates wait in a binary heap (max path probability, ties to the earliest found).
    """
    nseg = len(los)
    cap = 1 + max_nodes * max_children
    c_tok = np.empty(cap, np.int64)
    c_parent = np.empty(cap, np.int32)
    c_depth = np.empty(cap, np.int64)
    c_count = np.empty(cap, np.int64)
    c_score = np.empty(cap, np.float64)
    c_prob = np.empty(cap, np.float64)
    c_lo = np.empty((cap, nseg), np.int64)
    c_hi = np.empty((cap, nseg), np.int64)
    heap = np.empty(cap, np.int64)
    tokens = np.empty(max_nodes, np.int64)
    parents = np.empty(max_nodes, np.int32)
    scores = np.empty(max_nodes, np.float32)
    found = np.empty(nseg * (probes + 1) + 1, np.int64)
    probe = np.empty((2, nseg, probes), np.int64)
    cursor = np.empty((3, nseg), np.int64)
    sub = np.empty((2, nseg), np.int64)
    vals = np.empty(max_children, np.int64)
    counts = np.empty(max_children, np.int64)
    sub_lo = np.empty((max_children, nseg), np.int64)
    sub_hi = np.empty((max_children, nseg), np.int64)
    n_cand = 0
    n_heap = 0
    n_out = 0
    # The root (node -1) stands for the matched suffix itself.
    node, depth, total, prob = -1, 0, 0, 1.0
    for s in range(nseg):
        total += his[s] - los[s]
    node_lo, node_hi = los, his
    while True:
        if depth < max_depth and n_out < max_nodes:  # children of the last node chosen
            k = _children(text, sa, node_lo, node_hi, match_len + depth, key_len, probes, max_children,
                          found, probe, cursor, sub, vals, counts, sub_lo, sub_hi)
            for c in range(k):
                c_tok[n_cand] = vals[c]
                c_parent[n_cand] = node
                c_depth[n_cand] = depth + 1
                c_count[n_cand] = counts[c]
                c_score[n_cand] = counts[c] / (total + 1.0)
                c_prob[n_cand] = prob * c_score[n_cand]
                for s in range(nseg):
                    c_lo[n_cand, s], c_hi[n_cand, s] = sub_lo[c, s], sub_hi[c, s]
                n_heap = heap_push(heap, n_heap, c_prob, n_cand)
                n_cand += 1
        if n_out == max_nodes or n_heap == 0:
            break
        best, n_heap = heap_pop(heap, n_heap, c_prob)
        tokens[n_out] = c_tok[best]
        parents[n_out] = c_parent[best]
        scores[n_out] = c_score[best]
        node, depth, total, prob = n_out, c_depth[best], c_count[best], c_prob[best]
        node_lo, node_hi = c_lo[best], c_hi[best]
        n_out += 1
    return tokens[:n_out], parents[:n_out], scores[:n_out]


@njit(cache=True)
def _ranges(text, sa, seg_bounds, query):
    nseg = len(seg_bounds) - 1
    los = np.empty(nseg, np.int64)
    his = np.empty(nseg, np.int64)
    found = False
    for s in range(nseg):
        los[s], his[s] = match_range(text, sa, seg_bounds[s], seg_bounds[s + 1], query)
        found = found or his[s] > los[s]
    return los, his, found


@njit(cache=True)
def draft_tree(text, sa, seg_bounds, context, max_match, key_len, max_nodes, max_depth, probes, max_children):
    """Tree of the continuations of the longest suffix of `context` found in the text.

    Segment s holds text[seg_bounds[s]:seg_bounds[s+1]] and its own suffix array in
    the same slice of `sa`; counts add up over segments. A suffix occurs if any
    longer one does, so the longest match is a binary search over lengths; if its
    occurrences all end at a separator, shorter matches are tried.
    Returns (tokens, parents, scores, match_len); match_len 0 = no tree.
    """
    lo_m, hi_m = 0, min(max_match, len(context), key_len - 1)
    while lo_m < hi_m:
        mid = (lo_m + hi_m + 1) // 2
        if _ranges(text, sa, seg_bounds, context[len(context) - mid:])[2]:
            lo_m = mid
        else:
            hi_m = mid - 1
    for m in range(lo_m, 0, -1):
        los, his, _ = _ranges(text, sa, seg_bounds, context[len(context) - m:])
        tokens, parents, scores = _grow(text, sa, los, his, m, key_len, max_nodes, max_depth, probes, max_children)
        if len(tokens):
            return tokens, parents, scores, m
    return np.empty(0, np.int64), np.empty(0, np.int32), np.empty(0, np.float32), 0
