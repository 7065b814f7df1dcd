"""Retrieval drafter and its datastore, checked against brute force over the documents."""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lookahead.drafters import CorpusError, RetrievalDrafter, RetrievalStore, TreeBudget
from lookahead.drafters.suffix_array import build_suffix_array

BIG = 10**6  # probes above any range in these tests: children are enumerated exactly

docs_st = st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=30), min_size=1, max_size=8)
ctx_st = st.lists(st.integers(0, 3), min_size=1, max_size=12)
budget_st = st.builds(TreeBudget, st.integers(0, 24), st.integers(0, 12))


def occurs(docs, seq):
    """Brute force: does `seq` occur inside one document?"""
    n = len(seq)
    return any(d[i : i + n] == seq for d in docs for i in range(len(d) - n + 1))


def occurrences(docs, seq):
    n = len(seq)
    return [(k, i) for k, d in enumerate(docs) for i in range(len(d) - n + 1) if d[i : i + n] == seq]


def brute_match_len(docs, ctx, max_match, key_len):
    """Longest context suffix that occurs followed by at least one token."""
    for m in range(min(max_match, key_len - 1, len(ctx)), 0, -1):
        if any(i + m < len(docs[k]) for k, i in occurrences(docs, ctx[-m:])):
            return m
    return 0


@settings(max_examples=150, deadline=None)
@given(docs_st, ctx_st, st.sampled_from([2, 3, 4, 8, 32]), budget_st, st.integers(1, 10))
def test_paths_are_real_continuations_and_match_is_longest(docs, ctx, key_len, budget, max_match):
    store = RetrievalStore(key_len=key_len, probes=BIG)
    store.extend(docs)
    tree, m = store.draft(ctx, budget, max_match)
    assert len(tree) <= budget.max_nodes
    assert (tree.depths() <= budget.max_depth).all()
    if budget.max_nodes and budget.max_depth:  # a zero budget skips the lookup
        assert m == brute_match_len(docs, ctx, max_match, key_len)
        assert (m == 0) == (len(tree) == 0)
    for path in tree.paths():
        assert occurs(docs, ctx[len(ctx) - m :] + path)


@settings(max_examples=100, deadline=None)
@given(docs_st, ctx_st)
def test_root_scores_are_smoothed_continuation_frequencies(docs, ctx):
    store = RetrievalStore(probes=BIG, max_children=64)
    store.extend(docs)
    tree, m = store.draft(ctx, TreeBudget(64, 1), 16)
    if m == 0:
        return
    occ = occurrences(docs, ctx[-m:])
    nexts = [docs[k][i + m] for k, i in occ if i + m < len(docs[k])]
    assert sorted(tree.tokens.tolist()) == sorted(set(nexts))
    for tok, score in zip(tree.tokens, tree.scores):
        assert score == pytest.approx(nexts.count(tok) / (len(occ) + 1), rel=1e-6)


@settings(max_examples=60, deadline=None)
@given(docs_st, st.lists(ctx_st, min_size=1, max_size=5), st.sampled_from([3, 8, 32]))
def test_incremental_additions_match_a_store_built_from_scratch(docs, contexts, key_len):
    one_by_one = RetrievalStore(key_len=key_len, probes=BIG)
    for d in docs:
        one_by_one.add(d)
    scratch = RetrievalStore(key_len=key_len, probes=BIG)
    scratch.extend(docs)
    assert len(one_by_one) == len(scratch) == sum(map(len, docs))
    assert one_by_one.num_segments <= 1 + np.log2(len(one_by_one) + len(docs))
    for ctx in contexts:
        a, ma = one_by_one.draft(ctx, TreeBudget(16, 6))
        b, mb = scratch.draft(ctx, TreeBudget(16, 6))
        assert ma == mb
        assert a.tokens.tolist() == b.tokens.tolist()
        assert a.parents.tolist() == b.parents.tolist()
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-1, 5), min_size=1, max_size=60), st.sampled_from([1, 2, 3, 5, 8]))
def test_suffix_array_is_sorted_on_key_len_tokens(tokens, key_len):
    text = np.array(tokens + [-1], np.int32)
    sa = build_suffix_array(text, key_len)
    assert sorted(sa.tolist()) == list(range(len(text)))
    # Reads past the end sort below every token (-2 here).
    keys = [tuple(text[p : p + key_len].tolist()) + (-2,) * max(0, p + key_len - len(text)) for p in sa]
    assert keys == sorted(keys)


def test_large_range_is_sampled_to_its_frequent_continuations():
    # "7" is followed by 8 in 90% of 1000 occurrences and by 100 rare tokens once each.
    rng = np.random.default_rng(0)
    docs = [[7, 8]] * 900 + [[7, 100 + i] for i in range(100)]
    store = RetrievalStore(probes=16)
    store.extend(rng.permutation(np.array(docs, dtype=object)).tolist())
    tree, m = store.draft([7], TreeBudget(4, 1))
    assert m == 1 and tree.tokens[0] == 8
    assert tree.scores[0] == pytest.approx(900 / 1001, rel=1e-6)


def test_single_occurrence_is_followed_past_key_len():
    doc = list(range(40))
    store = RetrievalStore(key_len=4)
    store.add(doc)
    tree, m = store.draft([0, 1, 2], TreeBudget(32, 20))
    assert m == 3 and tree.paths() == [doc[3:23]]


def test_drafter_learns_past_outputs_across_requests():
    store = RetrievalStore()
    d = RetrievalDrafter(store)
    d.start("a", [1, 2])
    assert len(d.propose("a", TreeBudget(8, 4))) == 0
    d.update("a", [3, 4, 5])
    d.update("a", [6])
    d.stop("a")
    assert len(store) == 4 and store.num_docs == 1  # only the output, not the prompt
    d.start("b", [9, 9, 4])
    assert d.propose("b", TreeBudget(8, 8)).paths() == [[5, 6]]
    d.stop("b")  # nothing generated: nothing added
    assert store.num_docs == 1

    frozen = RetrievalDrafter(store, learn=False)
    frozen.start("c", [1])
    frozen.update("c", [2, 3])
    frozen.stop("c")
    assert store.num_docs == 1


def test_empty_store_and_empty_context_give_empty_trees():
    assert len(RetrievalStore().draft([1, 2], TreeBudget())[0]) == 0
    store = RetrievalStore()
    store.add([1, 2, 3])
    assert len(store.draft([], TreeBudget())[0]) == 0
    assert len(store.draft([5], TreeBudget())[0]) == 0


def test_bad_documents_are_rejected():
    with pytest.raises(ValueError, match="token ids"):
        RetrievalStore().add([1, -3])


# ---- corpus files ------------------------------------------------------------------------
def words(text):
    """A toy tokenizer: one id per word."""
    return [sum(map(ord, w)) for w in text.split()]


def test_from_files_reads_text_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("the cat sat on the mat\n\nthe dog ran\n")
    (tmp_path / "b.jsonl").write_text(
        json.dumps({"text": "a bird flew"}) + "\n\n" + json.dumps({"document": "the cat sat still"}) + "\n"
        + json.dumps({"content": "fish swim"}) + "\n"
    )
    store = RetrievalStore.from_files([tmp_path / "a.txt", tmp_path / "b.jsonl"], words)
    assert store.num_docs == 5
    tree, m = store.draft(words("and the cat sat"), TreeBudget(8, 4))
    assert m == 3
    assert sorted(tree.paths()) == sorted([words("on the mat"), words("still")])


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.txt", None, "no such corpus file"),
        ("empty.txt", b"  \n\n", "is empty"),
        ("blob.bin", b"abc\x00def", "NUL bytes"),
        ("latin1.txt", "café".encode("latin-1"), "not UTF-8"),
        ("bad.jsonl", b'{"text": "ok"}\n{"text": "unterminated\n', r"bad.jsonl:2: invalid JSONL line"),
        ("nofield.jsonl", b'{"text": "ok"}\n\n{"title": "x"}\n', r"nofield.jsonl:3: invalid JSONL line"),
        ("notobj.jsonl", b'["text"]\n', r"notobj.jsonl:1: invalid JSONL line"),
    ],
)
def test_bad_corpus_files_raise_one_line_corpus_errors(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CorpusError, match=message) as e:
        RetrievalStore.from_files([path], words)
    assert "\n" not in str(e.value) and isinstance(e.value, ValueError)


def test_directory_is_not_a_corpus_file(tmp_path):
    with pytest.raises(CorpusError, match="is a directory"):
        RetrievalStore.from_files([tmp_path], words)
