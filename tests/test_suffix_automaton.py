"""Suffix automaton drafter against brute force on small alphabets (many repeats)."""
import numpy as np
from hypothesis import given, settings, strategies as st

from lookahead.drafters import DraftTree, SuffixAutomatonDrafter, TreeBudget

seqs = st.lists(st.integers(0, 3), min_size=1, max_size=60)
budgets = st.builds(TreeBudget, st.integers(0, 40), st.integers(0, 8))


def brute_longest(ctx):
    """Longest k such that the last k tokens also end at some earlier position."""
    n = len(ctx)
    for k in range(n - 1, 0, -1):
        if any(ctx[e - k : e] == ctx[n - k :] for e in range(k, n)):
            return k
    return 0


def follows(ctx, suffix, path):
    """Some earlier occurrence of `suffix` is followed by `path`."""
    k = len(suffix)
    return any(ctx[e - k : e] == suffix and ctx[e : e + len(path)] == path for e in range(k, len(ctx)))


def started(ctx, **kw):
    d = SuffixAutomatonDrafter(**kw)
    d.start("r", ctx)
    return d


def checked(tree):
    """Rebuild through the validating constructor (propose skips the checks)."""
    return DraftTree(tree.tokens, tree.parents, tree.scores)


@settings(max_examples=200, deadline=None)
@given(seqs)
def test_longest_match_is_brute_force(ctx):
    assert started(ctx).match_length("r") == brute_longest(ctx)


@settings(max_examples=150, deadline=None)
@given(seqs, budgets)
def test_paths_continue_the_match_within_budget(ctx, budget):
    d = started(ctx)
    tree = checked(d.propose("r", budget))
    assert len(tree) <= budget.max_nodes
    assert len(tree) == 0 or tree.depths().max() <= budget.max_depth
    suffix = ctx[len(ctx) - d.match_length("r") :]
    for path in tree.paths():
        assert follows(ctx, suffix, path)


@settings(max_examples=100, deadline=None)
@given(seqs)
def test_root_scores_are_continuation_counts(ctx):
    d = started(ctx, alpha=1.0)
    k = d.match_length("r")
    tree = d.propose("r", TreeBudget(1024, 1))
    suffix, n = ctx[len(ctx) - k :], len(ctx)
    counts = {}
    for e in range(k, n):
        if ctx[e - k : e] == suffix:
            counts[ctx[e]] = counts.get(ctx[e], 0) + 1
    if k == 0:
        assert len(tree) == 0
        return
    total = sum(counts.values())
    got = dict(zip(tree.tokens.tolist(), tree.scores.tolist()))
    assert got == {a: np.float32(c / (total + 1.0)) for a, c in counts.items()}


@settings(max_examples=100, deadline=None)
@given(seqs, st.integers(1, 30), st.integers(1, 6))
def test_best_first_keeps_most_probable_nodes(ctx, max_nodes, max_depth):
    d = started(ctx)
    small = d.propose("r", TreeBudget(max_nodes, max_depth))
    full = checked(d.propose("r", TreeBudget(1024, max_depth)))
    want = np.sort(full.path_probs())[::-1][:max_nodes]
    np.testing.assert_allclose(np.sort(small.path_probs())[::-1], want, rtol=1e-6)


@settings(max_examples=100, deadline=None)
@given(seqs, st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=5), max_size=8))
def test_incremental_equals_rebuild(prompt, chunks):
    d = started(prompt)
    everything = list(prompt)
    for chunk in chunks:
        d.update("r", chunk)
        everything += chunk
    a, b = d.propose("r", TreeBudget(24, 6)), started(everything).propose("r", TreeBudget(24, 6))
    assert a.tokens.tolist() == b.tokens.tolist()
    assert a.parents.tolist() == b.parents.tolist()
    assert a.scores.tolist() == b.scores.tolist()


def test_large_vocabulary_and_growth():
    """Token ids past 2**16 and many capacity doublings, fed in uneven chunks."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256_000, 3000)
    ctx = np.concatenate([base, base[100:400], rng.integers(0, 256_000, 500), base[1000:1020]])
    d = started(ctx[:7].tolist())
    i = 7
    while i < len(ctx):
        k = int(rng.integers(1, 300))
        d.update("r", ctx[i : i + k])
        i += k
    assert d.match_length("r") == 20
    tree = d.propose("r", TreeBudget(16, 16))
    assert tree.paths() == [base[1020:1036].tolist()]
    b = started(ctx.tolist()).propose("r", TreeBudget(16, 16))
    assert tree.tokens.tolist() == b.tokens.tolist() and tree.scores.tolist() == b.scores.tolist()


def test_lifecycle_keeps_requests_apart():
    d = SuffixAutomatonDrafter()
    d.start("a", [1, 2, 3, 1, 2])
    d.start("b", [7, 8, 7])
    assert d.propose("a", TreeBudget(4, 2)).paths() == [[3, 1]]
    assert d.propose("b", TreeBudget(4, 2)).paths() == [[8, 7]]
    d.stop("a")
    assert d.propose("b", TreeBudget(4, 1)).paths() == [[8]]
