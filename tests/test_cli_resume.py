"""`lookahead run --resume` after Ctrl-C, after a kill and after a torn line: every id exactly once."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from lookahead.run.cli import app

LOOKAHEAD = str(Path(sys.executable).with_name("lookahead"))
IDS = [f"r{i}" for i in range(12)]


def rows(path: Path) -> list[dict]:
    """The output as JSONL: whole lines only, each one a JSON object."""
    text = path.read_text()
    assert text == "" or text.endswith("\n"), "a half line at the end"
    return [json.loads(line) for line in text.splitlines()]


def run_until_new_line(args: list[str], out: Path, sig: int, have: int) -> subprocess.CompletedProcess:
    """Start the CLI, wait until it has written a line beyond the `have` already there, then signal it."""
    # A shell's background job starts with SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler: restore the default so the CLI sees Ctrl-C as a user's terminal sends it.
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_text().count("\n") > have:
            proc.send_signal(sig)
            break
        time.sleep(0.02)
    stdout, stderr = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)


def test_ctrl_c_then_kill_then_resume_runs_every_request_once(tiny_model_dir, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "prompt": f"{i}: one two three one two three"}) + "\n" for i in IDS))
    out = tmp_path / "out.jsonl"
    # One request at a time while interrupting, so that requests finish one by one while others wait.
    args = [LOOKAHEAD, "run", "-i", str(src), "-o", str(out), "--model", str(tiny_model_dir),
            "--max-new-tokens", "8", "--drafter", "prompt-lookup"]
    one_at_a_time = ["--max-batch-size", "1"]

    first = run_until_new_line(args + one_at_a_time, out, signal.SIGINT, have=0)
    assert first.returncode == 130, first.stderr
    assert "interrupted" in first.stderr and "Traceback" not in first.stderr
    done = rows(out)
    assert 1 <= len(done) < len(IDS) and all(r["error"] is None for r in done)

    second = run_until_new_line(args + one_at_a_time + ["--resume"], out, signal.SIGKILL, have=len(done))
    assert second.returncode == -signal.SIGKILL
    after_kill = rows(out)
    assert after_kill[: len(done)] == done and len(after_kill) > len(done)  # appended, nothing rewritten

    with open(out, "a") as f:  # what a crash of the machine could leave: a torn last line
        f.write('{"id": "r5", "text": "tor')
    res = CliRunner().invoke(app, ["run", *args[2:], "--resume", "--json"])
    assert res.exit_code == 0, res.stderr
    final = rows(out)
    assert sorted(r["id"] for r in final) == sorted(IDS)  # every id exactly once
    assert final[: len(after_kill)] == after_kill
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["resumed"] == len(after_kill) and summary["requests"] == len(IDS) - len(after_kill)


def test_resume_reruns_failed_and_bad_lines_once(tiny_model_dir, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join([json.dumps({"id": "a", "prompt": "x y x y"}), "{bad",
                              json.dumps({"id": "b", "prompt": "z"})]) + "\n")
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"id": "a", "text": "kept", "error": None}) + "\n"
                   + json.dumps({"id": "b", "error": "RuntimeError: boom", "finish_reason": "error"}) + "\n"
                   + json.dumps({"id": "invalid-2", "line": 2, "error": "line 2: invalid JSON"}) + "\n")
    res = CliRunner().invoke(app, ["run", "-i", src, "-o", out, "--model", tiny_model_dir, "--max-new-tokens", 3,
                                   "--resume"])
    assert res.exit_code == 1  # the bad line is still bad
    final = {r["id"]: r for r in rows(out)}
    assert len(rows(out)) == 3 and final["a"]["text"] == "kept"  # finished: not run again
    assert final["b"]["error"] is None and final["b"]["output_tokens"] == 3
    assert final["invalid-2"]["line"] == 2
