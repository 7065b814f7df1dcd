"""Source-aligned drafter on synthetic edited copies of random sources."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lookahead.drafters import SourceAlignedDrafter, TreeBudget

BUDGET = TreeBudget(32, 16)


def edited_copy(source, rate, rng, vocab):
    """The source with random substitutions, insertions and deletions at `rate` per token."""
    out = []
    for t in source:
        if rng.random() >= rate:
            out.append(t)
            continue
        kind = rng.integers(3)
        if kind == 0:  # substitution
            out.append(int(rng.integers(vocab)))
        elif kind == 1:  # insertion before t
            out += [int(rng.integers(vocab)), t]
        # kind 2: deletion
    return out


def accepted_prefix(tree, target):
    """Longest root path of the tree that the target continues with (greedy acceptance)."""
    node, out = -1, []
    while len(out) < len(target):
        kids = [c for c in tree.children(node) if tree.tokens[c] == target[len(out)]]
        if not kids:
            break
        node = kids[0]
        out.append(target[len(out)])
    return out


def is_substring(seq, source):
    n = len(seq)
    return any(source[i : i + n] == seq for i in range(len(source) - n + 1))


def replay(drafter, rid, target, source, budget=BUDGET):
    """τ: mean tokens per step (accepted path + the target's bonus token)."""
    pos = steps = 0
    while pos < len(target):
        tree = drafter.propose(rid, budget)
        assert len(tree) <= budget.max_nodes and (tree.depths() <= budget.max_depth).all()
        for path in tree.paths():  # every branch is a stretch of the source
            assert is_substring(path, source)
        acc = accepted_prefix(tree, target[pos:])
        acc += target[pos + len(acc) : pos + len(acc) + 1]  # bonus token
        drafter.update(rid, acc)
        pos, steps = pos + len(acc), steps + 1
    return len(target) / steps


def random_source(rng, n, vocab):
    return [int(t) for t in rng.integers(vocab, size=n)]


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_replay_tau_is_high_with_five_percent_edits(seed):
    rng = np.random.default_rng(seed)
    source = random_source(rng, 300, 500)
    target = edited_copy(source, 0.05, rng, 500)
    d = SourceAlignedDrafter()
    d.start("r", [1, 2, 3])
    d.set_source("r", source)
    assert replay(d, "r", target, source) > 7.0  # measured 9.6–13 (mean 11.2) over 20 seeds


def test_unedited_copy_is_drafted_at_full_depth():
    rng = np.random.default_rng(0)
    source = random_source(rng, 170, 1000)
    d = SourceAlignedDrafter()
    d.start("r", [7])
    d.set_source("r", source)
    assert replay(d, "r", source, source) == 170 / 10  # 16 drafted + 1 bonus per step


def test_default_source_is_the_prompt_and_aligns_after_the_output_starts():
    rng = np.random.default_rng(1)
    text = random_source(rng, 200, 1000)
    prompt = [3, 1, 4, 1, 5] + text + [9, 2]  # instruction, text to correct, template tail
    target = edited_copy(text, 0.05, rng, 1000)
    d = SourceAlignedDrafter()
    d.start("r", prompt)
    assert len(d.propose("r", BUDGET)) == 0  # where the output starts is unknown yet
    assert replay(d, "r", target, prompt) > 4.0


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["substitution", "insertion", "deletion"]), st.integers(1, 2))
def test_drafting_resumes_right_after_an_edit(seed, kind, length):
    """After the output takes an edit of `length` tokens, the very next proposal
    holds the true continuation at full depth (a deletion needs no output at all),
    given room for every resync branch (the budget's split between them is the
    calibrator's business)."""
    rng = np.random.default_rng(seed)
    source = random_source(rng, 80, 10_000)
    e = int(rng.integers(5, 50))  # edit at source position e
    new = [10_000 + i for i in range(length)]  # tokens not in the source
    if kind == "substitution":
        target, cut = source[:e] + new + source[e + length :], e + length
    elif kind == "insertion":
        target, cut = source[:e] + new + source[e:], e + length
    else:
        target, cut = source[:e] + source[e + length :], e
    d = SourceAlignedDrafter()
    d.start("r", [])
    d.set_source("r", source)
    d.update("r", target[:cut])
    want = target[cut : cut + 16]
    assert accepted_prefix(d.propose("r", TreeBudget(6 * 16, 16)), want) == want


def test_lost_pointer_realigns_globally():
    source = list(range(100))
    d = SourceAlignedDrafter(max_edit=3)
    d.start("r", [])
    d.set_source("r", source)
    d.update("r", [0, 1, 2] + [500, 501, 502, 503] + [60, 61])  # long edit, then a jump
    assert d.propose("r", TreeBudget(4, 4)).paths()[0] == [62, 63, 64, 65]


def test_explicit_source_drafts_from_its_start_and_zero_budget_is_empty():
    d = SourceAlignedDrafter()
    d.start("r", [1, 2, 3])
    d.set_source("r", [5, 6, 7])
    assert d.propose("r", TreeBudget(8, 8)).paths()[0] == [5, 6, 7]
    assert len(d.propose("r", TreeBudget(0, 8))) == 0
    d.update("r", [5, 6, 7])
    assert len(d.propose("r", TreeBudget(8, 8))) == 0  # source exhausted
    d.stop("r")
