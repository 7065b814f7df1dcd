"""Mixer merges trees into one trie; the factory maps CLI names to drafters."""
import sys
import types

import pytest

from lookahead.drafters import (
    Calibrated, DraftTree, MixerDrafter, PromptLookupDrafter, SuffixAutomatonDrafter, TreeBudget, make_drafter,
)
from test_calibration import FixedDrafter


def test_shared_prefixes_become_one_node():
    a = FixedDrafter(DraftTree.chain([1, 2, 3], [0.5, 0.5, 0.5]))
    b = FixedDrafter(DraftTree.chain([1, 2, 4], [0.5, 0.5, 0.5]))
    t = MixerDrafter([a, b]).propose("r", TreeBudget(16, 8))
    assert t.tokens.tolist() == [1, 2, 3, 4]
    assert t.parents.tolist() == [-1, 0, 1, 1]
    assert t.scores.tolist() == [0.75, 0.75, 0.5, 0.5]  # 1 - (1 - 0.5)^2 where both agree


def test_weights_and_budget():
    a = FixedDrafter(DraftTree.chain([1, 2, 3], [0.9, 0.9, 0.9]))
    b = FixedDrafter(DraftTree.chain([5, 6], [0.8, 0.8]))
    t = MixerDrafter([a, b], weights=[1.0, 0.5]).propose("r", TreeBudget(4, 2))
    assert t.paths() == [[1, 2], [5, 6]]  # path probabilities 0.9, 0.81, 0.4, 0.16
    assert t.scores.tolist() == pytest.approx([0.9, 0.9, 0.4, 0.4])


def test_lifecycle_reaches_every_member():
    a, b = FixedDrafter(DraftTree.empty()), FixedDrafter(DraftTree.empty())
    m = MixerDrafter([a, b])
    m.start("r", [1])
    m.update("r", [2, 3])
    assert a.seen["r"] == b.seen["r"] == [1, 2, 3]
    assert len(m.propose("r", TreeBudget(8, 8))) == 0
    m.stop("r")
    assert not a.seen and not b.seen


def test_real_drafters_mix():
    m = MixerDrafter([PromptLookupDrafter(), SuffixAutomatonDrafter()])
    m.start("r", [1, 2, 3, 4, 1, 2, 5, 1, 2])
    t = m.propose("r", TreeBudget(6, 3))
    assert len(t) <= 6 and sorted(p[0] for p in t.paths()) == [3, 5]


def test_factory_names():
    assert make_drafter("none") is None
    d = make_drafter("prompt-lookup", max_ngram=3)
    assert isinstance(d, Calibrated) and d.drafter.max_ngram == 3
    assert isinstance(make_drafter("suffix", calibrate=False), SuffixAutomatonDrafter)
    auto = make_drafter("auto")
    assert isinstance(auto.drafter, MixerDrafter)
    assert [m.name for m in auto.drafter.drafters] == ["prompt-lookup", "suffix", "recycling"]


def test_factory_rejects_unknown_names_in_one_line():
    with pytest.raises(ValueError) as e:
        make_drafter("ngram")
    assert "\n" not in str(e.value) and "prompt-lookup" in str(e.value) and "auto" in str(e.value)


def test_auto_adds_retrieval_and_source_lazily(monkeypatch):
    """Wiring only: stand-ins for the retrieval and source-aligned modules."""
    class Stub(FixedDrafter):
        def __init__(self, store=None):
            super().__init__(DraftTree.empty())
            self.store = store

    retrieval = types.SimpleNamespace(RetrievalDrafter=type("RetrievalDrafter", (Stub,), {"name": "retrieval"}))
    source = types.SimpleNamespace(SourceAlignedDrafter=type("SourceAlignedDrafter", (Stub,), {"name": "source"}))
    monkeypatch.setitem(sys.modules, "lookahead.drafters.retrieval", retrieval)
    monkeypatch.setitem(sys.modules, "lookahead.drafters.source_aligned", source)
    auto = make_drafter("auto", store="STORE", task="gec")
    assert [m.name for m in auto.drafter.drafters] == ["prompt-lookup", "suffix", "recycling", "retrieval", "source"]
    assert auto.drafter.drafters[3].drafter.store == "STORE"
    assert [m.name for m in make_drafter("auto", task="rag").drafter.drafters] == ["prompt-lookup", "suffix",
                                                                                    "recycling"]
