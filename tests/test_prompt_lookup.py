"""Prompt lookup drafter against a brute-force n-gram search."""
import numpy as np
from hypothesis import given, settings, strategies as st

from lookahead.drafters import DraftTree, PromptLookupDrafter, TreeBudget

seqs = st.lists(st.integers(0, 3), min_size=1, max_size=60)
budgets = st.builds(TreeBudget, st.integers(0, 40), st.integers(0, 8))


def match_len(ctx, j, max_n):
    """How many tokens before position j agree with the end of ctx (capped at max_n)."""
    m, n = 0, len(ctx)
    while m < max_n and m < j and ctx[j - 1 - m] == ctx[n - 1 - m]:
        m += 1
    return m


def started(ctx, **kw):
    d = PromptLookupDrafter(**kw)
    d.start("r", ctx)
    return d


def test_all_matches_merge_not_just_the_leftmost():
    d = started([1, 2, 3, 4, 1, 2])
    assert d.propose("r", TreeBudget(8, 4)).paths() == [[3, 4, 1, 2]]
    d = started([5, 1, 2, 9, 5, 1, 2, 8, 5, 1, 2], max_ngram=3)
    assert sorted(d.propose("r", TreeBudget(8, 1)).paths()) == [[8], [9]]


@settings(max_examples=150, deadline=None)
@given(seqs, budgets, st.integers(1, 3), st.integers(0, 3))
def test_paths_are_real_continuations_within_budget(ctx, budget, min_n, extra):
    max_n = min_n + extra
    tree = started(ctx, min_ngram=min_n, max_ngram=max_n).propose("r", budget)
    tree = DraftTree(tree.tokens, tree.parents, tree.scores)  # propose skips the checks
    assert len(tree) <= budget.max_nodes
    assert len(tree) == 0 or tree.depths().max() <= budget.max_depth
    for path in tree.paths():
        assert any(
            match_len(ctx, j, max_n) >= min_n and ctx[j : j + len(path)] == path for j in range(1, len(ctx))
        )


@settings(max_examples=150, deadline=None)
@given(seqs, st.integers(1, 4))
def test_root_offers_every_matched_continuation(ctx, min_n):
    d = started(ctx, min_ngram=min_n, max_ngram=4, max_matches=1000)
    tree = d.propose("r", TreeBudget(1024, 1))
    want = {ctx[j] for j in range(1, len(ctx)) if match_len(ctx, j, 4) >= min_n}
    assert sorted(tree.tokens.tolist()) == sorted(want)


@settings(max_examples=100, deadline=None)
@given(seqs, st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=5), max_size=8))
def test_incremental_equals_rebuild(prompt, chunks):
    d = started(prompt)
    everything = list(prompt)
    for chunk in chunks:
        d.update("r", chunk)
        everything += chunk
    np.testing.assert_array_equal(d.context("r"), everything)
    a, b = d.propose("r", TreeBudget(24, 6)), started(everything).propose("r", TreeBudget(24, 6))
    assert a.tokens.tolist() == b.tokens.tolist() and a.parents.tolist() == b.parents.tolist()
    assert a.scores.tolist() == b.scores.tolist()


def test_one_long_match_outweighs_many_short_ones():
    # "7 8 9" is followed by 1 once; "9" alone is followed by 2 five times.
    ctx = [9, 2, 9, 2, 9, 2, 9, 2, 9, 2, 7, 8, 9, 1, 0, 7, 8, 9]
    tree = started(ctx, max_ngram=3).propose("r", TreeBudget(8, 1))
    best = int(np.argmax(tree.scores))
    assert tree.tokens[best] == 1 and tree.scores[best] > 0.7


def test_max_matches_caps_the_merge():
    ctx = [4, 0, 4, 1, 4, 2, 4, 3, 4]  # "4" followed by 0, 1, 2, 3
    tree = started(ctx, max_matches=2).propose("r", TreeBudget(8, 1))
    assert sorted(tree.tokens.tolist()) == [2, 3]  # the most recent two
