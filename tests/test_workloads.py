"""Workloads: the bundled samples load and are well formed; builders are seeded.

Bundled-file tests need no data packages; builder tests skip without the
optional `data` extra (aclsum, ua-gec, codespell).
"""
import json
import re

import pytest

from lookahead.eval.workloads import (
    BUNDLED, WorkloadError, build_gec, build_gec_ua, build_rag, bundled_path, load_workload,
)
from lookahead.samples import TEXT_FIELD

NAMES = sorted(BUNDLED)


@pytest.mark.parametrize("name", NAMES)
def test_bundled_sample_is_well_formed(name):
    path = bundled_path(name)
    assert path.is_file() and path.stat().st_size < 1_500_000
    cases = load_workload(name)
    assert 30 <= len(cases) <= 50
    assert len({c["id"] for c in cases}) == len(cases)
    for c in cases:
        assert c["task"] == name and c["id"].startswith(f"{name}-")
        assert [m["role"] for m in c["messages"]] == ["user"]
        text = c[TEXT_FIELD[name]]
        assert text and c["reference"]
        assert text in c["messages"][0]["content"]  # the prompt is self-contained


def test_bundle_notice_names_every_source():
    notice = (bundled_path("rag").parent / "NOTICE.md").read_text(encoding="utf-8")
    for needle in ["aclsum", "CC BY 4.0", "codespell", "CC BY-SA 3.0", "ua-gec"]:
        assert needle in notice


@pytest.mark.parametrize("name", ["gec", "gec-ua"])
def test_correction_cases_differ_but_share_most_words(name):
    for c in load_workload(name):
        assert c["source"] != c["reference"]
        src, ref = c["source"].split(), c["reference"].split()
        shared = len(set(src) & set(ref)) / len(set(ref))
        assert shared > 0.5, (c["id"], shared)


def test_gec_edits_explain_the_difference():
    for c in load_workload("gec"):
        edits = c["meta"]["edits"]
        assert edits
        # Edits are in text order: undo each at the first whole-word match after the last.
        restored, pos = c["source"], 0
        for word, typo in edits:
            m = re.compile(rf"\b{typo}\b").search(restored, pos)
            assert m, (c["id"], typo)
            restored = restored[:m.start()] + word + restored[m.end():]
            pos = m.start() + len(word)
        assert restored == c["reference"], c["id"]


def test_limit_and_path(tmp_path):
    assert [c["id"] for c in load_workload("gec-ua", limit=3)] == ["gec-ua-000", "gec-ua-001", "gec-ua-002"]
    assert load_workload(bundled_path("gec"), limit=1)[0]["id"] == "gec-000"
    assert load_workload("rag", limit=0) == []


def test_unknown_name_is_a_one_line_error():
    with pytest.raises(WorkloadError, match="unknown workload 'nope'") as info:
        load_workload("nope")
    assert "\n" not in str(info.value)
    with pytest.raises(WorkloadError):
        bundled_path("nope")
    assert issubclass(WorkloadError, ValueError)


@pytest.mark.parametrize("line, message", [
    ("{not json", "not JSON"),
    ('{"id": "x", "task": "qa"}', "task must be one of"),
    ('{"id": "x", "task": "gec", "messages": [], "reference": "a"}', "'source' missing"),
    ('{"id": "x", "task": "gec", "messages": [], "reference": "a", "source": "b"}', "messages must be"),
])
def test_invalid_file_is_rejected(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(WorkloadError, match=message):
        load_workload(path)


def test_duplicate_ids_are_rejected(tmp_path):
    case = load_workload("gec", limit=1)[0]
    path = tmp_path / "dup.jsonl"
    path.write_text((json.dumps(case) + "\n") * 2, encoding="utf-8")
    with pytest.raises(WorkloadError, match="duplicate id"):
        load_workload(path)


def test_rag_builder_is_seeded_and_reproduces_the_bundle():
    pytest.importorskip("aclsum")
    assert build_rag(5, seed=0) == load_workload("rag", limit=5)
    assert build_rag(5, seed=1) == build_rag(5, seed=1) != build_rag(5, seed=0)
    with pytest.raises(WorkloadError):
        build_rag(10**6)


def test_gec_builder_is_seeded_and_reproduces_the_bundle():
    pytest.importorskip("aclsum")
    pytest.importorskip("codespell_lib")
    assert build_gec(5, seed=0) == load_workload("gec", limit=5)
    assert build_gec(5, seed=3) == build_gec(5, seed=3) != build_gec(5, seed=0)


def test_gec_ua_builder_is_seeded_and_reproduces_the_bundle():
    pytest.importorskip("ua_gec")
    assert build_gec_ua(5, seed=0) == load_workload("gec-ua", limit=5)
    assert build_gec_ua(5, seed=2) == build_gec_ua(5, seed=2) != build_gec_ua(5, seed=0)
