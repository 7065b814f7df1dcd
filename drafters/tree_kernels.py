"""The tree operations on the propose path, compiled (numba): no Python per node.

A proposal passes through several of them every step (a drafter's own pruning,
calibration, the mixer's merge and prune, the engine's prune); as Python loops over
nodes they made up most of `auto`'s 370-1000 µs per propose at 64 nodes (replay of
eval/traces, 2-core CPU). Arrays are DraftTree's: tokens int64, parents int32
(-1 = child of the committed token, parents[i] < i), scores float32.

>>> import numpy as np
>>> tokens = np.array([5, 7, 8, 9], np.int64)
>>> parents = np.array([-1, 0, 0, -1], np.int32)
>>> scores = np.array([0.9, 0.6, 0.3, 0.1], np.float32)
>>> depths(parents).tolist()
[1, 2, 2, 1]
>>> [round(p, 2) for p in path_probs(parents, scores).tolist()]
[0.9, 0.54, 0.27, 0.1]
>>> t, p, s, broken = prune(tokens, parents, scores, 3, 1)   # depth 1: 5 and 9 only
>>> t.tolist(), p.tolist(), broken
([5, 9], [-1, -1], 0)
>>> prune(tokens, np.array([-1, 1, 0, -1], np.int32), scores, 3, 1)[3]   # node 1 its own parent
2

Merging two trees: 5 is shared, so it is one node scored 1 - (1 - 0.9)(1 - 0.5):

>>> t, p, s, broken = merge(np.array([5, 7, 5, 6]), np.array([-1, 0, -1, 0], np.int32),
...                         np.array([0.9, 0.6, 0.5, 0.5], np.float32), np.array([2, 2]), np.ones(2))
>>> t.tolist(), p.tolist(), [round(x, 2) for x in s.tolist()]
([5, 7, 6], [-1, 0, 0], [0.95, 0.6, 0.5])
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def broken_rule(tokens, parents, scores):
    """0 for a valid tree, else the first rule it breaks, in this order: 1 the arrays differ
    in length, 2 a parent does not come before its child, 3 a parent is below -1, 4 a score
    is not a probability (NaN included), 5 a token id is negative (DraftTree.RULES)."""
    n = len(tokens)
    if len(parents) != n or len(scores) != n:
        return 1
    late = low = improbable = negative = False
    for i in range(n):
        late |= parents[i] >= i
        low |= parents[i] < -1
        improbable |= not (0.0 <= scores[i] <= 1.0)
        negative |= tokens[i] < 0
    return 2 if late else 3 if low else 4 if improbable else 5 if negative else 0


@njit(cache=True)
def depths(parents):
    """int32 [N]: 1 for children of the committed token (and, never reading past the
    array, for a malformed parent >= i, which prune and merge reject)."""
    d = np.empty(len(parents), np.int32)
    for i in range(len(parents)):
        p = parents[i]
        d[i] = d[p] + 1 if 0 <= p < i else 1
    return d


@njit(cache=True)
def path_probs(parents, scores):
    """float64 [N]: the product of the (float32) scores from the root to each node
    (a malformed parent counts as the root, as in `depths`)."""
    p = np.empty(len(parents), np.float64)
    for i in range(len(parents)):
        q = parents[i]
        p[i] = np.float64(scores[i]) * (p[q] if 0 <= q < i else 1.0)
    return p


@njit(cache=True)
def prune(tokens, parents, scores, max_nodes, max_depth):
    """(tokens, parents, scores, 0): the `max_nodes` nodes of highest path probability within
    `max_depth`, ties to the earlier node, in node order (DraftTree.prune); the input arrays
    when all of them fit. A tree that breaks a rule (`broken_rule`) gives no nodes and the rule:
    a drafter's bug must fail its request, not read past the arrays."""
    n = len(tokens)
    broken = broken_rule(tokens, parents, scores)
    if n == 0 and not broken:
        return tokens, parents, scores, 0
    if broken or max_nodes <= 0 or max_depth <= 0:
        return tokens[:0].copy(), parents[:0].copy(), scores[:0].copy(), broken
    depth = depths(parents)
    if n <= max_nodes and depth.max() <= max_depth:
        return tokens, parents, scores, 0
    prob = path_probs(parents, scores)
    for i in range(n):
        if depth[i] > max_depth:
            prob[i] = -1.0
    order = np.argsort(-prob, kind="mergesort")  # stable: ties keep node order
    keep = np.zeros(n, np.bool_)
    for j in range(min(max_nodes, n)):
        if prob[order[j]] >= 0:
            keep[order[j]] = True
    # A child's path probability never exceeds its parent's, so every kept node's parent is kept.
    remap = np.empty(n, np.int32)
    k = 0
    for i in range(n):
        remap[i] = k
        if keep[i]:
            k += 1
    out_tok = np.empty(k, np.int64)
    out_par = np.empty(k, np.int32)
    out_score = np.empty(k, np.float32)
    for i in range(n):
        if keep[i]:
            j = remap[i]
            out_tok[j] = tokens[i]
            out_par[j] = -1 if parents[i] < 0 else remap[parents[i]]
            out_score[j] = scores[i]
    return out_tok, out_par, out_score, 0


@njit(cache=True)
def merge(tokens, parents, scores, lengths, weights):
    """(tokens, parents, scores, 0): one trie of trees k = 0..K-1 (the next lengths[k] nodes of
    the arrays, parents local to each tree): the same token under the same parent is one node,
    in order of first appearance, scored 1 - prod_k(1 - w_k * s_k) (DraftTree.merge). If a
    tree breaks a rule (`broken_rule`): no nodes and the rule."""
    n = len(tokens)
    broken = 1 if len(parents) != n or len(scores) != n or lengths.sum() != n else 0
    lo = 0
    for k in range(len(lengths)):
        if not broken:
            hi = lo + lengths[k]
            broken = broken_rule(tokens[lo:hi], parents[lo:hi], scores[lo:hi])
            lo = hi
    if broken:
        return tokens[:0].copy(), parents[:0].copy(), scores[:0].copy(), broken
    out_tok = np.empty(n, np.int64)
    out_par = np.empty(n, np.int32)
    miss = np.empty(n, np.float64)
    first = np.full(n + 1, -1, np.int64)  # first child of node i at first[i + 1]; the root's at first[0]
    sibling = np.empty(n, np.int64)
    remap = np.empty(n, np.int64)
    m, lo = 0, 0
    for k in range(len(lengths)):
        w = np.float32(weights[k])
        for i in range(lo, lo + lengths[k]):
            parent = -1 if parents[i] < 0 else remap[lo + parents[i]]
            s = np.float64(w * scores[i])  # a float32 product, as numpy takes a Python float times a float32
            c = first[parent + 1]
            while c != -1 and out_tok[c] != tokens[i]:
                c = sibling[c]
            if c == -1:
                c = m
                m += 1
                out_tok[c], out_par[c], miss[c] = tokens[i], parent, 1.0 - s
                sibling[c], first[parent + 1] = first[parent + 1], c
            else:
                miss[c] *= 1.0 - s
            remap[i] = c
        lo += lengths[k]
    out_score = np.empty(m, np.float32)
    for i in range(m):
        out_score[i] = min(max(1.0 - miss[i], 0.0), 1.0)
    return out_tok[:m].copy(), out_par[:m].copy(), out_score, 0


# Compile (or load from cache) at import, as the drafters warm their kernels.
_t, _p, _s = np.array([1, 2], np.int64), np.array([-1, 0], np.int32), np.ones(2, np.float32)
prune(_t, _p, _s, 1, 1)
merge(_t, _p, _s, np.array([2], np.int64), np.ones(1))
del _t, _p, _s
