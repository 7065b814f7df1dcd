"""`lookahead run` end to end on a tiny random model with a real tokenizer."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lookahead.run.cli import app

LOOKAHEAD = str(Path(sys.executable).with_name("lookahead"))


def run_cli(*args):
    return CliRunner().invoke(app, ["run", *map(str, args)])


def write_lines(path: Path, lines: list) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_run_writes_every_request_and_reports_bad_lines(tiny_model_dir, tmp_path):
    src = write_lines(tmp_path / "in.jsonl", [
        {"id": "chat", "messages": [{"role": "user", "content": "one two three one two three one two"}]},
        {"id": "raw", "prompt": "a b c a b c a b"},
        "{not json",
        {"id": "short", "prompt": "hello", "max_new_tokens": 3},
    ])
    out = tmp_path / "out.jsonl"
    res = run_cli("--input", src, "--output", out, "--model", tiny_model_dir, "--max-new-tokens", 8, "--json")
    assert res.exit_code == 1  # one line failed; the others still ran
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {"chat", "raw", "short", "invalid-3"}
    assert rows["invalid-3"]["error"].startswith("line 3: invalid JSON") and rows["invalid-3"]["line"] == 3
    assert rows["short"]["output_tokens"] <= 3
    assert all(rows[k]["target_forwards"] >= 1 and rows[k]["error"] is None for k in ("chat", "raw", "short"))
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["requests"] == 3 and summary["failed"] == 1 and summary["tau"] >= 1.0
    assert summary["drafter"] == "auto" and "speedup_est" not in summary  # the default drafter; no estimate
    assert summary["speedup_measured"] is None  # measured only with --compare-plain


def test_compare_plain_measures_speedup_and_checks_outputs(tiny_model_dir, tmp_path):
    src = write_lines(tmp_path / "in.jsonl", [{"id": "r", "prompt": "to be or not to be, to be or not to be"},
                                              {"id": "s", "prompt": "la la la la la la"}])
    res = run_cli("--input", src, "--model", tiny_model_dir, "--drafter", "prompt-lookup", "--max-new-tokens", 12,
                  "--compare-plain", "--json")
    assert res.exit_code == 0, res.stderr
    s = json.loads(res.stdout.strip().splitlines()[-1])
    assert s["outputs_compared"] == 2 and s["outputs_identical"] == 2  # fp32 greedy: lossless
    assert s["plain_wall_s"] > 0 and s["speedup_measured"] == pytest.approx(s["plain_wall_s"] / s["wall_s"])
    res = run_cli("--input", src, "--model", tiny_model_dir, "--max-new-tokens", 2, "--limit", 1, "--compare-plain")
    assert res.exit_code == 0 and res.stderr.count("×") == 1  # measured only: no estimate beside it
    assert "speedup over plain decoding (measured)" in res.stderr and "1/1" in res.stderr


def test_openai_batch_lines_get_openai_batch_answers(tiny_model_dir, tmp_path):
    src = write_lines(tmp_path / "in.jsonl", [
        {"custom_id": "b1", "method": "POST", "url": "/v1/chat/completions",
         "body": {"messages": [{"role": "user", "content": "x y z x y z"}], "max_tokens": 5}},
    ])
    out = tmp_path / "out.jsonl"
    assert run_cli("--input", src, "--output", out, "--model", tiny_model_dir).exit_code == 0
    [row] = map(json.loads, out.read_text().splitlines())
    assert row["custom_id"] == "b1" and row["error"] is None
    assert row["response"]["body"]["usage"]["completion_tokens"] <= 5
    assert isinstance(row["response"]["body"]["choices"][0]["message"]["content"], str)


def test_speculation_does_not_change_cli_output(tiny_model_dir, tmp_path):
    src = write_lines(tmp_path / "in.jsonl", [{"id": "r", "prompt": "to be or not to be, to be or not to be"}])
    texts = {}
    for drafter in ("none", "prompt-lookup"):
        out = tmp_path / f"{drafter}.jsonl"
        assert run_cli("--input", src, "-o", out, "--model", tiny_model_dir, "--drafter", drafter,
                       "--max-new-tokens", 24).exit_code == 0
        texts[drafter] = json.loads(out.read_text())["output_ids"]
    assert texts["none"] == texts["prompt-lookup"]


# In a real process (tests/test_cli_errors.py covers every mistake in-process, faster).
@pytest.mark.parametrize("args, message", [
    (["--input", "/no/such.jsonl"], "input file not found"),
    (["--workload", "nope"], "--workload must be one of"),
    (["--workload", "gec", "--model", "/no/such/model"], "model path does not exist"),
    ([], "give exactly one of --input FILE or --workload NAME"),
])
def test_user_errors_are_one_line_without_traceback(args, message):
    proc = subprocess.run([LOOKAHEAD, "run", *args], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {proc.stderr.strip()[7:]}"]
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_help_is_instant():
    """--help imports neither torch nor transformers (seconds each), whatever the machine's speed."""
    probe = ("import sys; from typer.testing import CliRunner; from lookahead.run.cli import app; "
             "res = CliRunner().invoke(app, ['--help']); assert res.exit_code == 0 and 'run' in res.output; "
             "print([m for m in ('torch', 'transformers', 'numba') if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_help_gives_every_option_a_default():
    proc = subprocess.run([LOOKAHEAD, "run", "--help"], capture_output=True, text=True, env={"COLUMNS": "300"})
    options = [line for line in proc.stdout.splitlines() if line.lstrip("│ ").startswith("--")]
    missing = [o.split()[1] for o in options if "[default:" not in o and "--help" not in o]
    assert len(options) > 20 and not missing
