"""The compiled tree operations against plain-Python statements of their rules, on random trees.

Their outputs skip DraftTree's checks (DraftTree.unchecked), so they go through the
checking constructor here, as do the trees of the drafters whose kernels use them.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lookahead.drafters import DraftTree, RetrievalStore, SourceAlignedDrafter, TreeBudget, TreeError


@st.composite
def trees(draw, max_size=40, vocab=4):
    """Random valid trees; few tokens and scores from a small set, so merges share nodes and probabilities tie."""
    n = draw(st.integers(0, max_size))
    parents = [draw(st.integers(-1, i - 1)) for i in range(n)]
    tokens = draw(st.lists(st.integers(0, vocab - 1), min_size=n, max_size=n))
    scores = draw(st.lists(st.sampled_from([0.0, 0.1, 0.5, 0.7, 1.0]), min_size=n, max_size=n))
    return DraftTree(np.array(tokens), np.array(parents), np.array(scores))


def checked(t: DraftTree) -> DraftTree:
    assert t.tokens.dtype == np.int64 and t.parents.dtype == np.int32 and t.scores.dtype == np.float32
    return DraftTree(t.tokens, t.parents, t.scores)


def reference_prune(t: DraftTree, budget: TreeBudget) -> DraftTree:
    """By path probability, then node index; nothing deeper than max_depth."""
    if len(t) == 0 or budget.max_nodes == 0 or budget.max_depth == 0:
        return DraftTree.empty()
    depth, prob = [], []
    for i, p in enumerate(t.parents.tolist()):
        depth.append(1 if p < 0 else depth[p] + 1)
        prob.append(float(t.scores[i]) * (1.0 if p < 0 else prob[p]))
    ranked = sorted((i for i in range(len(t)) if depth[i] <= budget.max_depth), key=lambda i: (-prob[i], i))
    keep = np.zeros(len(t), bool)
    keep[ranked[: budget.max_nodes]] = True
    return t.subset(keep)


def reference_merge(parts: list[DraftTree], weights: list[float]) -> DraftTree:
    """A dict on (parent, token); a shared node's miss probabilities multiply."""
    index, tokens, parents, miss = {}, [], [], []
    for t, w in zip(parts, weights):
        remap = []
        for i, p in enumerate(t.parents.tolist()):
            key = (-1 if p < 0 else remap[p], int(t.tokens[i]))
            s = float(np.float32(w) * t.scores[i])  # numpy: a Python float times a float32 is a float32
            if key not in index:
                index[key] = len(tokens)
                tokens.append(key[1]), parents.append(key[0]), miss.append(1.0 - s)
            else:
                miss[index[key]] *= 1.0 - s
            remap.append(index[key])
    return DraftTree(np.array(tokens, np.int64), np.array(parents, np.int32),
                     np.clip(1.0 - np.array(miss, np.float64), 0.0, 1.0).astype(np.float32))


def same(a: DraftTree, b: DraftTree) -> bool:
    return (a.tokens.tolist(), a.parents.tolist(), a.scores.tobytes()) == (
        b.tokens.tolist(), b.parents.tolist(), b.scores.tobytes())


@settings(max_examples=300, deadline=None)
@given(trees(), st.integers(0, 45), st.integers(0, 12))
def test_prune_is_the_top_k_by_path_probability(tree, max_nodes, max_depth):
    budget = TreeBudget(max_nodes, max_depth)
    assert same(checked(tree.prune(budget)), reference_prune(tree, budget))


@settings(max_examples=300, deadline=None)
@given(st.lists(trees(max_size=20), max_size=4), st.data())
def test_merge_is_the_trie_of_its_trees(parts, data):
    weights = data.draw(st.lists(st.sampled_from([1.0, 0.9, 0.5, 0.3]), min_size=len(parts), max_size=len(parts)))
    assert same(checked(DraftTree.merge(parts, weights)), reference_merge(parts, weights))
    assert same(checked(DraftTree.merge(parts)), reference_merge(parts, [1.0] * len(parts)))


def test_path_probs_and_depths_of_an_empty_tree():
    assert DraftTree.empty().depths().tolist() == [] and DraftTree.empty().path_probs().tolist() == []


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=60), st.lists(st.integers(0, 5), max_size=30),
       st.integers(1, 16), st.integers(1, 8))
def test_drafters_trees_pass_the_checks(source, output, max_nodes, max_depth):
    budget = TreeBudget(max_nodes, max_depth)
    d = SourceAlignedDrafter()
    d.start("r", source)
    for t in output:
        checked(d.propose("r", budget))
        d.update("r", [t])
    store = RetrievalStore(key_len=4, probes=4, max_children=3)
    store.add(source)
    checked(store.draft(output or [0], budget)[0])


MALFORMED = {  # unchecked trees a buggy drafter might return -> the rule they break
    "a node its own parent": ([5, 6], [-1, 1], [1.0, 1.0], "every parent must come before"),
    "a parent past the end": ([5, 6], [-1, 7], [1.0, 1.0], "every parent must come before"),
    "a parent below -1": ([5, 6], [-1, -3], [1.0, 1.0], "parents must be -1"),
    "a NaN score": ([5, 6], [-1, 0], [1.0, np.nan], "scores must be probabilities"),
    "a negative token": ([5, -6], [-1, 0], [1.0, 1.0], "token ids must be non-negative"),
    "arrays of two lengths": ([5, 6], [-1], [1.0, 1.0], "of one length"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_prune_merge_and_the_constructor_reject_malformed_trees(case):
    tokens, parents, scores, message = MALFORMED[case]
    arrays = np.array(tokens, np.int64), np.array(parents, np.int32), np.array(scores, np.float32)
    bad = DraftTree.unchecked(*arrays)
    with pytest.raises(TreeError, match=message):
        bad.prune(TreeBudget(8, 8))
    with pytest.raises(TreeError, match=message):
        DraftTree.merge([DraftTree.chain([1, 2]), bad])
    with pytest.raises(TreeError, match=message):
        DraftTree(*arrays)
