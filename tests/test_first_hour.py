"""What a new user trips over in the first hour: one test per finding (the run surface and the API).

A tiny random Llama with SmolLM2's real tokenizer (the `tiny_model_dir` fixture), fp32.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from lookahead.run.cli import app

pytestmark = pytest.mark.usefixtures("one_thread")


def cli(*args, **kw):
    return CliRunner().invoke(app, [*map(str, args)], **kw)


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    from lookahead import Lookahead

    return Lookahead(str(tiny_model_dir), drafter="prompt-lookup", dtype="float32")


REPEAT = "one two three four one two three four one two three four"


# 1. a string is one prompt
def test_a_string_is_one_prompt(lm):
    results = lm.generate("Say hi.", max_new_tokens=3)
    assert len(results) == 1 and results[0].id == "0" and results[0].output_tokens == 3


# 2. OpenAI batch fields: honoured, or refused for that line alone
def test_openai_batch_fields_are_honoured_or_refused(tiny_model_dir, tmp_path):
    body = {"model": "x", "messages": [{"role": "user", "content": REPEAT}], "max_completion_tokens": 3}
    src = write(tmp_path / "in.jsonl", [
        {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": body},
        {"custom_id": "b", "body": {**body, "frequency_penalty": 0.5}},
        {"custom_id": "c", "body": {**body, "n": 2}},
        {"custom_id": "d", "url": "/v1/embeddings", "body": body},
    ])
    out = tmp_path / "out.jsonl"
    res = cli("run", "-i", src, "-o", out, "--model", tiny_model_dir, "--max-new-tokens", 30)
    assert res.exit_code == 1 and "Traceback" not in res.stderr
    rows = {r["custom_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert rows["a"]["response"]["body"]["usage"]["completion_tokens"] == 3
    assert "unknown field 'frequency_penalty'" in rows["b"]["error"]["message"]
    assert '"n" must be 1' in rows["c"]["error"]["message"]
    assert "/v1/embeddings" in rows["d"]["error"]["message"]


def test_stop_strings_end_the_output_and_plain_decoding_agrees(lm):
    free = lm.generate(REPEAT, max_new_tokens=24)[0]
    assert len(free.text) > 6
    stop = free.text[3:6]  # a string the unstopped output holds
    for speculate in (True, False):
        [r] = [x for x in lm.results(REPEAT, speculate=speculate, max_new_tokens=24, stop=[stop])]
        assert r.finish_reason == "stop" and stop not in r.text and free.text.startswith(r.text)
        assert free.token_ids[: len(r.token_ids)] == r.token_ids
        assert stop in lm.tokenizer.decode(r.token_ids)  # the tokens end with the one that completes it


# 3. an existing output file is refused unless --resume or --overwrite
def test_an_existing_output_is_refused_unless_resume_or_overwrite(tiny_model_dir, tmp_path):
    src = write(tmp_path / "in.jsonl", [{"id": "a", "prompt": "a b a b"}])
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "old", "text": "keep me", "error": null}\n')
    res = cli("run", "-i", src, "-o", out, "--model", tiny_model_dir, "--max-new-tokens", 2)
    assert res.exit_code == 2 and "exists: --resume goes on with it, --overwrite replaces it" in res.stderr
    assert "keep me" in out.read_text()
    res = cli("run", "-i", src, "-o", out, "--model", tiny_model_dir, "--max-new-tokens", 2, "--overwrite")
    assert res.exit_code == 0 and [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["a"]


# 4. texts to stdout without --output; --json: result lines, then the summary
def test_texts_go_to_stdout_and_json_gives_result_lines(tiny_model_dir, tmp_path):
    src = write(tmp_path / "in.jsonl", [{"id": "a", "prompt": "a b a b"}, {"id": "b", "prompt": "c d c d"}])
    res = cli("run", "-i", src, "--model", tiny_model_dir, "--max-new-tokens", 3)
    assert res.exit_code == 0
    assert res.stdout.index("==> a <==") < res.stdout.index("==> b <==")  # input order
    assert "lookahead run" in res.stderr and "lookahead run" not in res.stdout  # the summary on stderr
    res = cli("run", "-i", src, "--model", tiny_model_dir, "--max-new-tokens", 3, "--json")
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert [x["id"] for x in lines[:2]] == ["a", "b"] and all(x["output_tokens"] == 3 for x in lines[:2])
    assert lines[2]["requests"] == 2  # the summary last


# 5. failures named with their reasons; a bad line keeps its own id; the valid fields listed
def test_failures_are_named_with_their_reasons(tiny_model_dir, tmp_path):
    src = write(tmp_path / "in.jsonl", [{"id": "q1", "question": "Why?"}, {"id": "ok", "prompt": "a b"}])
    res = cli("run", "-i", src, "--model", tiny_model_dir, "--max-new-tokens", 2, "--json")
    summary = json.loads(res.stdout.splitlines()[-1])
    [failure] = summary["failures"]
    assert failure["id"] == "q1" and "unknown field 'question'" in failure["error"]
    assert "messages, prompt, text" in failure["error"]  # which fields do work
    res = cli("run", "-i", src, "--model", tiny_model_dir, "--max-new-tokens", 2)
    assert "failed q1: line 1: unknown field 'question'" in res.stderr


# 7. no estimated speedup: measured (--compare-plain) or not shown
def test_the_summary_shows_no_estimated_speedup(tiny_model_dir, tmp_path):
    src = write(tmp_path / "in.jsonl", [{"id": "a", "prompt": "a b a b"}])
    res = cli("run", "-i", src, "--model", tiny_model_dir, "--max-new-tokens", 2)
    assert "estimated" not in res.stderr and "--compare-plain measures it" in res.stderr


# 8. --threads; nothing left to resume loads no model
def test_threads_and_a_finished_resume_loads_nothing(tiny_model_dir, tmp_path):
    src = write(tmp_path / "in.jsonl", [{"id": "a", "prompt": "a b a b"}])
    out = tmp_path / "out.jsonl"
    assert cli("run", "-i", src, "-o", out, "--model", tiny_model_dir, "--max-new-tokens", 2,
               "--threads", 1).exit_code == 0
    assert cli("run", "-i", src, "--model", tiny_model_dir, "--threads", 0).exit_code == 2
    res = cli("run", "-i", src, "-o", out, "--model", tmp_path / "no-such-model", "--resume")
    assert res.exit_code == 0 and "nothing left to run" in res.stderr  # the missing model was never opened


# 9. a Hub name; max_new_tokens past the context; a prompt too long for it
def test_a_hub_name_that_cannot_be_fetched_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    src = write(tmp_path / "in.jsonl", [{"id": "a", "prompt": "a b"}])
    res = cli("run", "-i", src, "--model", "no-such-org/no-such-model")
    assert res.exit_code == 2 and "cannot get no-such-org/no-such-model from the Hugging Face Hub" in res.stderr
    assert "Traceback" not in res.stderr


def test_max_new_tokens_past_the_context_stops_there_and_truncation_keeps_the_end(lm):
    context = lm.engine.max_positions
    lm.engine.max_positions = 40
    try:
        [r] = lm.generate({"id": "p", "prompt": REPEAT}, max_new_tokens=500)
        assert r.error is None and r.prompt_tokens + r.output_tokens == 40 and r.finish_reason == "length"
        long = " ".join(["word"] * 60)
        [bad] = lm.generate({"id": "long", "prompt": long}, max_new_tokens=4)
        assert "fills the model's context of 40" in bad.error
        [cut] = lm.generate({"id": "long", "prompt": long}, max_new_tokens=4, truncate_prompt=True)
        assert cut.error is None and cut.prompt_tokens == 36 and cut.output_tokens == 4
    finally:
        lm.engine.max_positions = context


# 10. duplicate ids and empty prompts in the API; errors printed as written; input order; the cache
def test_duplicate_ids_and_empty_prompts_fail_alone(lm):
    a, dup, empty = lm.generate([{"id": "x", "prompt": "a b"}, {"id": "x", "prompt": "c d"},
                                 {"id": "e", "prompt": "  "}], max_new_tokens=2)
    assert a.error is None and a.output_tokens == 2
    assert "duplicate id" in dup.error and "empty prompt" in empty.error


def test_an_error_with_brackets_prints_as_written():
    from lookahead.run.report import print_summary

    console = Console(record=True, width=200)
    s = {"model": "m", "drafter": "d", "device": "cpu", "dtype": "float32", "requests": 0, "failed": 1,
         "failures": [{"id": "q[1]", "error": "bad value [red]x[/red]"}], "output_tokens": 0, "tau": 0.0,
         "tokens_per_s": 0.0, "wall_s": 0.0, "speedup_measured": None}
    print_summary(console, s)
    assert "failed q[1]: bad value [red]x[/red]" in console.export_text()


def test_in_order_writes_the_output_in_input_order(tiny_model_dir, tmp_path):
    src = write(tmp_path / "in.jsonl", [{"id": "long", "prompt": "a b", "max_new_tokens": 12},
                                        {"id": "short", "prompt": "c d", "max_new_tokens": 1}])
    for flag, order in ((None, ["short", "long"]), ("--in-order", ["long", "short"])):
        out = tmp_path / f"{flag}.jsonl"
        args = ["run", "-i", src, "-o", out, "--model", tiny_model_dir] + ([flag] if flag else [])
        assert cli(*args).exit_code == 0
        assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == order


def test_the_cache_command_lists_and_clears_converted_models(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKAHEAD_CACHE", str(tmp_path))
    folder = tmp_path / "models" / "smollm2-abc"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"\0" * (3 << 20))
    res = cli("cache")
    assert res.exit_code == 0 and "3 MiB" in res.stdout and str(folder) in res.stdout and folder.exists()
    res = cli("cache", "--clear")
    assert res.exit_code == 0 and "deleted: 1" in res.stdout and not folder.exists()


# 11. tokens as they are accepted
def test_stream_yields_tokens_as_they_are_accepted(lm):
    chunks = list(lm.stream(REPEAT, max_new_tokens=20))
    result = chunks[-1].result
    assert result is not None and all(c.result is None for c in chunks[:-1])
    assert len(chunks) > 2 and len(chunks) <= result.target_forwards + 1  # one per accepting step
    assert sum((c.token_ids for c in chunks), []) == result.token_ids
    assert "".join(c.text for c in chunks) == result.text


# 12. logprobs: the same numbers with and without drafts
def test_logprobs_are_the_same_with_and_without_drafts(lm):
    spec = lm.generate(REPEAT, max_new_tokens=16, logprobs=2)[0]
    [plain] = list(lm.results(REPEAT, speculate=False, max_new_tokens=16, logprobs=2))
    assert spec.accepted > 0 and spec.token_ids == plain.token_ids
    assert spec.logprobs == plain.logprobs and len(spec.logprobs) == 16
    first = spec.logprobs[0]
    assert first["id"] == spec.token_ids[0] and len(first["top_logprobs"]) == 2 and first["logprob"] <= 0
    assert first["top_logprobs"][0]["logprob"] >= first["logprob"]
