"""Bad input, tried for real: each case runs `lookahead run` in a subprocess and records what it gets.

  python -m lookahead.eval.reliability          # a markdown table: case, exit code, first stderr line

A user mistake must give one line `error: ...` and a non-zero exit, never a traceback;
a bad request among good ones must fail alone (exit 1, the others in the output).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

GOOD = json.dumps({"id": "ok", "messages": [{"role": "user", "content": "Say hi."}]})


def cases(tmp: Path) -> list[tuple[str, list[str]]]:
    def file(name: str, content: bytes | str) -> str:
        path = tmp / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(path)

    good = file("good.jsonl", GOOD + "\n")
    bert = tmp / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    long_prompt = json.dumps({"id": "long", "prompt": "word " * 9000})
    return [
        ("empty prompt", ["-i", file("empty-prompt.jsonl", json.dumps({"id": "e", "prompt": " "}) + "\n" + GOOD)]),
        ("prompt longer than the model's context", ["-i", file("long.jsonl", long_prompt + "\n" + GOOD)]),
        ("--max-new-tokens 0", ["-i", good, "--max-new-tokens", "0"]),
        ("invalid JSONL line (default --on-error skip)", ["-i", file("bad.jsonl", GOOD + "\n{broken\n")]),
        ("invalid JSONL line, --on-error fail", ["-i", file("bad2.jsonl", GOOD + "\n{broken\n"), "--on-error", "fail"]),
        ("missing input file", ["-i", str(tmp / "nope.jsonl")]),
        ("empty input file", ["-i", file("empty.jsonl", "\n")]),
        ("unknown workload", ["--workload", "poetry"]),
        ("unknown drafter", ["-i", good, "--drafter", "magic"]),
        ("model path that does not exist", ["-i", good, "--model", str(tmp / "no-model")]),
        ("model path that is not a model", ["-i", good, "--model", file("notes.txt", "hello")]),
        ("unsupported architecture", ["-i", good, "--model", str(bert)]),
        ("corrupt GGUF", ["-i", good, "--model", file("junk.gguf", bytes(range(256)) * 8)]),
        ("corpus file missing", ["-i", good, "--corpus", str(tmp / "none.txt")]),
        ("corpus file empty", ["-i", good, "--corpus", file("empty.txt", "  \n")]),
        ("corpus file binary", ["-i", good, "--corpus", file("bin.txt", b"\x7fELF\x00\x00")]),
        ("corpus file not UTF-8", ["-i", good, "--corpus", file("latin.txt", b"na\xefve")]),
        ("tree budget out of range", ["-i", good, "--max-nodes", "5000"]),
        ("--device cuda with no GPU", ["-i", good, "--device", "cuda"]),
    ]


def run_case(args: list[str], out: Path) -> tuple[int, str, bool]:
    """(exit code, what the user sees, whether a traceback leaked).

    What the user sees: the `error:` line on stderr, else the error recorded in the
    output file for the request that failed (the other requests still ran).
    """
    exe = str(Path(sys.executable).with_name("lookahead"))
    if "--max-new-tokens" not in args:
        args = [*args, "--max-new-tokens", "4"]
    out.unlink(missing_ok=True)
    proc = subprocess.run([exe, "run", *args, "-o", str(out)], capture_output=True, text=True)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    if errors:
        return proc.returncode, errors[0], "Traceback" in proc.stderr
    rows = [json.loads(ln) for ln in out.read_text().splitlines()] if out.exists() else []
    failed = [f"output: {r['id']}: {r['error']}" for r in rows if r.get("error")]
    ok = sum(1 for r in rows if not r.get("error"))
    return proc.returncode, f"{failed[0] if failed else 'no error'} ({ok} other request(s) finished)", \
        "Traceback" in proc.stderr


def main(argv=None) -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rows = ["| bad input | exit code | what the user sees (stderr) | traceback |", "|---|---|---|---|"]
        for name, args in cases(tmp):
            code, shown, traceback = run_case(args, tmp / "out.jsonl")
            rows.append(f"| {name} | {code} | `{shown.replace('|', '/')[:160]}` | {'yes' if traceback else 'no'} |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
