"""`lookahead run --task gec|rag` and `--documents`: what reaches the prompt, the source and the datastore."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import transformers
from typer.testing import CliRunner

from lookahead.api import build_drafter
from lookahead.run.cli import app
from lookahead.run.documents import read_document_files
from lookahead.drafters.corpus import CorpusError
from lookahead.eval.workloads import bundled_path
from lookahead.run.requests_io import InputError, RequestSpec, read_requests
from lookahead.run.runner import RunOptions, load_lines
from lookahead.run.tasks import GEC_INSTRUCTION, infer_task, shape

DOC = "The Zorblatt river flows north through Vellmore and ends in the Grey Lake."


def run_cli(*args):
    return CliRunner().invoke(app, ["run", *map(str, args)])


def traced_prompts(tiny_model_dir, trace: Path) -> dict[str, str]:
    tok = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    return {r["id"]: tok.decode(r["prompt_ids"]) for r in map(json.loads, trace.read_text().splitlines())}


def test_documents_go_before_the_question_for_every_request(tiny_model_dir, tmp_path):
    (tmp_path / "doc.txt").write_text(DOC + "\n\nIt freezes in winter.\n")
    (tmp_path / "more.jsonl").write_text(json.dumps({"document": "Vellmore has 300 people."}) + "\n")
    questions = tmp_path / "q.txt"
    questions.write_text("Where does the river end?\n\nWhat happens in winter?\n")
    out, trace = tmp_path / "out.jsonl", tmp_path / "trace.jsonl"
    res = run_cli("-i", questions, "--documents", tmp_path / "doc.txt", "--documents", tmp_path / "more.jsonl",
                  "--model", tiny_model_dir, "--max-new-tokens", 4, "-o", out, "--trace-output", trace, "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1])["task"] == "rag"  # --documents implies rag
    prompts = traced_prompts(tiny_model_dir, trace)
    assert set(prompts) == {"line-1", "line-3"}  # a .txt input: one request per non-blank line
    for rid, question in (("line-1", "Where does the river end?"), ("line-3", "What happens in winter?")):
        p = prompts[rid]
        assert p.index("Document 1:") < p.index(DOC) < p.index("It freezes") < p.index("Document 2:") \
            < p.index("Vellmore has 300 people.") < p.index(question)


def test_per_request_documents_and_embedded_ones(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(x) for x in [
        {"id": "own", "text": "Where does it end?", "documents": [DOC]},
        {"id": "chat", "messages": [{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "Where?"}], "documents": [DOC]},
        {"id": "embedded", "prompt": f"Read: {DOC}\nWhere?", "document": DOC},  # the bundled rag form
        {"id": "none", "text": "No documents here"},
    ]) + "\n")
    lines = load_lines(RunOptions(input=src), "rag", [])
    specs = {ln.spec.id: ln.spec for ln in lines if ln.spec}
    assert specs["own"].messages[0]["content"].startswith(f"Document 1:\n{DOC}")
    assert specs["chat"].messages[0] == {"role": "system", "content": "Be brief."}
    assert specs["chat"].messages[1]["content"].endswith("Where?") and DOC in specs["chat"].messages[1]["content"]
    assert specs["embedded"].prompt == f"Read: {DOC}\nWhere?"  # already in the prompt: not repeated
    [bad] = [ln for ln in lines if ln.spec is None]
    assert bad.lineno == 4 and "task rag needs documents" in bad.error


def test_bundled_rag_prompts_stay_as_they_are():
    for ln in read_requests(bundled_path("rag"))[:3]:
        assert shape(ln.spec, infer_task(None, "rag", []), []).messages == ln.spec.messages


def test_documents_reach_the_retrieval_datastore(tiny_model_dir):
    tok = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    mixer = build_drafter("auto", tok, None, "rag", documents=[DOC]).drafter
    [retrieval] = [m.drafter for m in mixer.drafters if m.name == "retrieval"]
    assert len(retrieval.store) == len(tok(DOC, add_special_tokens=False)["input_ids"])


def test_gec_sentences_become_corrections_with_their_source(tiny_model_dir, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("She go to school yesterday.\nThe cats is hungry.\n")
    lines = load_lines(RunOptions(input=src), "gec", [])
    assert [ln.spec.source for ln in lines] == ["She go to school yesterday.", "The cats is hungry."]
    assert lines[0].spec.messages[0]["content"] == f"{GEC_INSTRUCTION}\n\nShe go to school yesterday."
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text(json.dumps({"id": "s1", "text": "Him are late."}) + "\n")
    [line] = load_lines(RunOptions(input=jsonl), "gec", [])
    assert line.spec.id == "s1" and line.spec.source == "Him are late."
    out = tmp_path / "out.jsonl"
    res = run_cli("-i", src, "--task", "gec", "--model", tiny_model_dir, "--max-new-tokens", 4, "-o", out, "--json")
    assert res.exit_code == 0, res.stderr
    assert [r["id"] for r in map(json.loads, out.read_text().splitlines())] == ["line-1", "line-2"]
    # The auto drafter corrects from the source: the source-aligned drafter is one of its members.
    tok = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    names = [m.name for m in build_drafter("auto", tok, None, "gec").drafter.drafters]
    assert "source" in names


def test_task_inference():
    assert infer_task(None, "gec-ua", []) == "gec" and infer_task(None, "rag", []) == "rag"
    assert infer_task(None, None, ["d"]) == "rag" and infer_task(None, None, []) == "chat"
    assert infer_task("chat", "gec", []) == "chat"
    with pytest.raises(InputError):
        shape(RequestSpec("q", text="?"), "rag", [])


@pytest.mark.parametrize("content, message", [
    (None, "no such corpus file"), (b"", "is empty"), (b"\x00\x01binary", "looks binary"),
    (b"caf\xe9 latin-1", "not UTF-8"),
])
def test_bad_document_files(tmp_path, content, message):
    path = tmp_path / "doc.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CorpusError, match=message):
        read_document_files([path])


def test_a_documents_folder_is_its_files(tmp_path):
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "a.txt").write_text("first\n\nstill first")
    assert read_document_files([tmp_path]) == ["first\n\nstill first", "second"]
