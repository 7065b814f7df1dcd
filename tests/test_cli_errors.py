"""Every user mistake in `lookahead run`: one line `error: ...` on stderr, a non-zero exit, never a traceback."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lookahead.run.cli import app

GOOD = json.dumps({"id": "ok", "prompt": "a b a b a b"}) + "\n"


def run_cli(*args):
    return CliRunner().invoke(app, ["run", *map(str, args)])


def assert_one_line_error(res, message: str, code: int = 2) -> None:
    assert res.exit_code == code, (res.exit_code, res.stderr, res.exception)
    assert isinstance(res.exception, SystemExit)  # not an exception escaping with a traceback
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.stderr


def make(tmp_path: Path, name: str, content: bytes | str | None) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path.write_bytes(content)
    return path


@pytest.mark.parametrize("name, content, message", [
    ("missing.jsonl", None, "input file not found"),
    ("empty.jsonl", "\n\n", "input file has no requests"),
    ("latin1.jsonl", b'{"id": "a", "prompt": "caf\xe9"}\n', "not UTF-8"),
])
def test_bad_input_files(tiny_model_dir, tmp_path, name, content, message):
    assert_one_line_error(run_cli("-i", make(tmp_path, name, content), "--model", tiny_model_dir), message)


@pytest.mark.parametrize("args, message", [
    (["--task", "poetry"], "--task must be one of chat, rag, gec"),
    (["--on-error", "ignore"], "--on-error must be one of skip, fail"),
    (["--dtype", "int3"], "--dtype must be one of"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be in [1,"),
    (["--max-new-tokens", "-5"], "--max-new-tokens must be in [1,"),
    (["--max-depth", "2000"], "--max-depth must be in [0, 1024]"),
    (["--max-nodes", "-1"], "--max-nodes must be in [0, 1024]"),
    (["--resume"], "--resume needs --output"),
    (["-o", "/no/such/dir/out.jsonl"], "output folder does not exist: /no/such/dir"),
])
def test_bad_option_values(tmp_path, args, message):
    assert_one_line_error(run_cli("-i", make(tmp_path, "in.jsonl", GOOD), *args), message)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: --device cuda is valid")
def test_cuda_without_a_gpu(tiny_model_dir, tmp_path):
    res = run_cli("-i", make(tmp_path, "in.jsonl", GOOD), "--model", tiny_model_dir, "--device", "cuda")
    assert_one_line_error(res, "no CUDA GPU is available")


def bad_models(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    (tmp_path / "empty-dir").mkdir()
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    return {
        "missing": (tmp_path / "nope", "model path does not exist"),
        "folder without config": (tmp_path / "empty-dir", "no config.json"),
        "not a model": (make(tmp_path, "notes.txt", "hello"), "not a model"),
        "unsupported": (tmp_path / "bert", "unsupported architecture 'bert'"),
        "garbage gguf": (make(tmp_path, "junk.gguf", bytes(range(256)) * 8), "not a GGUF file"),
        "torn gguf": (make(tmp_path, "torn.gguf", b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64), "cannot read GGUF"),
    }


@pytest.mark.parametrize("case", ["missing", "folder without config", "not a model", "unsupported",
                                  "garbage gguf", "torn gguf"])
def test_bad_models(tmp_path, monkeypatch, case):
    monkeypatch.setenv("LOOKAHEAD_CACHE", str(tmp_path / "cache"))  # no converted copy of a bad file anywhere
    path, message = bad_models(tmp_path)[case]
    assert_one_line_error(run_cli("-i", make(tmp_path, "in.jsonl", GOOD), "--model", path), message)


@pytest.mark.parametrize("content, message", [
    (None, "no such corpus file"), ("  \n", "is empty"), (b"\x7fELF\x00\x00", "looks binary"),
    (b"na\xefve", "not UTF-8"),
])
def test_bad_corpus_and_document_files(tiny_model_dir, tmp_path, content, message):
    bad = make(tmp_path, "corpus.txt", content)
    src = make(tmp_path, "in.jsonl", GOOD)
    for option in ("--corpus", "--documents"):
        assert_one_line_error(run_cli("-i", src, "--model", tiny_model_dir, option, bad), message)


def test_an_unwritable_output_file(tiny_model_dir, tmp_path):
    (tmp_path / "out.jsonl").mkdir()  # a folder where the file should go
    res = run_cli("-i", make(tmp_path, "in.jsonl", GOOD), "--model", tiny_model_dir, "-o", tmp_path / "out.jsonl")
    assert_one_line_error(res, "cannot write")


def test_on_error_fail_stops_at_the_first_bad_line(tiny_model_dir, tmp_path):
    src = make(tmp_path, "in.jsonl", GOOD + "{broken\n" + GOOD.replace('"ok"', '"ok2"'))
    out = tmp_path / "out.jsonl"
    res = run_cli("-i", src, "--model", tiny_model_dir, "--on-error", "fail", "-o", out)
    assert_one_line_error(res, "line 2: invalid JSON")
    assert not out.exists()  # stopped before anything ran


def test_a_prompt_longer_than_the_context_fails_alone(tiny_model_dir, tmp_path):
    long = " ".join(["word"] * 2100)  # the tiny model's context is 2048 positions
    src = make(tmp_path, "in.jsonl", json.dumps({"id": "long", "prompt": long}) + "\n" + GOOD)
    out = tmp_path / "out.jsonl"
    res = run_cli("-i", src, "--model", tiny_model_dir, "--max-new-tokens", 4, "-o", out, "--drafter", "none")
    assert res.exit_code == 1 and "Traceback" not in res.stderr
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert "fills the model's context of 2048" in rows["long"]["error"]
    assert rows["ok"]["error"] is None and rows["ok"]["output_tokens"] == 4
    res = run_cli("-i", src, "--model", tiny_model_dir, "--max-new-tokens", 4, "--on-error", "fail")
    assert_one_line_error(res, "request long: ")


@pytest.mark.parametrize("field, value, message", [
    ("temperature", -1, "temperature must be >= 0, got -1"),
    ("temperature", "hot", "temperature must be a number, got 'hot'"),
    ("top_p", 5, "top_p must be in (0, 1], got 5"),
    ("max_tokens", "many", "max_new_tokens must be an integer, got 'many'"),
    ("max_tokens", 0, "max_new_tokens must be in [1, 1048576], got 0"),
    ("max_tokens", True, "max_new_tokens must be an integer, got True"),
])
def test_a_bad_sampling_value_fails_its_own_request(tiny_model_dir, tmp_path, field, value, message):
    """Good lines before and after the bad one finish; the bad one gets its own error line."""
    bad = json.dumps({"id": "bad", "prompt": "a b a b", field: value}) + "\n"
    src = make(tmp_path, "in.jsonl", GOOD + bad + GOOD.replace('"ok"', '"ok2"'))
    out = tmp_path / "out.jsonl"
    res = run_cli("-i", src, "--model", tiny_model_dir, "--max-new-tokens", 3, "-o", out)
    assert res.exit_code == 1 and "Traceback" not in res.stderr, res.stderr
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert rows["bad"]["error"] == f"request bad: {message}" or rows["bad"]["error"] == message, rows["bad"]
    assert rows["ok"]["output_tokens"] == rows["ok2"]["output_tokens"] == 3
    assert rows["ok"]["error"] is None and rows["ok2"]["error"] is None
