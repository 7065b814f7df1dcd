"""The bundled sample workloads (sample_data/), and reading, checking and writing workload files
(JSONL, one case per line). `lookahead run --workload` runs them; eval/workloads builds them.

A case is a chat request plus what later code needs beside it:

    {"id": "gec-000", "task": "gec",
     "messages": [{"role": "user", "content": "Correct the spelling ..."}],
     "source": "<text to correct>", "reference": "<original text>", "meta": {...}}

`rag` cases carry "document" (the raw document) instead of "source"; "meta"
(provenance) is optional.

>>> cases = load_workload("gec", limit=2)
>>> [c["id"] for c in cases]
['gec-000', 'gec-001']
>>> try:
...     load_workload("nope")
... except WorkloadError as e:
...     print(e)
unknown workload 'nope': not one of rag, gec, gec-ua and no such file
"""
from __future__ import annotations

import json
import os
from pathlib import Path

DATA_DIR = Path(__file__).parent / "sample_data"
BUNDLED = {"rag": "rag.jsonl", "gec": "gec.jsonl", "gec-ua": "gec-ua.jsonl"}
WORKLOADS = tuple(BUNDLED)
# The field that holds the raw text a drafter may copy from, per task.
TEXT_FIELD = {"rag": "document", "gec": "source", "gec-ua": "source"}


class WorkloadError(ValueError):
    """A workload name, file or case that cannot be used (one-line message)."""


def bundled_path(name: str) -> Path:
    """Path of the bundled sample `name` ("rag", "gec" or "gec-ua")."""
    if name not in BUNDLED:
        raise WorkloadError(f"unknown workload {name!r}: not one of {', '.join(BUNDLED)}")
    return DATA_DIR / BUNDLED[name]


def load_workload(name_or_path: str | os.PathLike, limit: int | None = None) -> list[dict]:
    """Cases of a bundled workload (by name) or of a JSONL file (by path), in file order.

    `limit` keeps the first `limit` cases. Every case is checked, so a caller
    can index its fields without guarding.
    """
    if limit is not None and limit < 0:
        raise WorkloadError(f"limit must be >= 0, got {limit}")
    if str(name_or_path) in BUNDLED:
        path = bundled_path(str(name_or_path))
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise WorkloadError(
                f"unknown workload {str(name_or_path)!r}: not one of {', '.join(BUNDLED)} and no such file"
            )
    cases: list[dict] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if limit is not None and len(cases) >= limit:
                break
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                case = json.loads(line)
            except json.JSONDecodeError as e:
                raise WorkloadError(f"{where}: not JSON ({e.msg})") from None
            check_case(case, where)
            if case["id"] in seen:
                raise WorkloadError(f"{where}: duplicate id {case['id']!r}")
            seen.add(case["id"])
            cases.append(case)
    if not cases and limit != 0:
        raise WorkloadError(f"{path}: no cases")
    return cases


def check_case(case: object, where: str = "case") -> None:
    """Raise WorkloadError unless `case` has the fields its task needs, as strings."""
    if not isinstance(case, dict):
        raise WorkloadError(f"{where}: a case must be a JSON object")
    task = case.get("task")
    if task not in TEXT_FIELD:
        raise WorkloadError(f"{where}: task must be one of {', '.join(TEXT_FIELD)}, got {task!r}")
    for field in ("id", "reference", TEXT_FIELD[task]):
        if not isinstance(case.get(field), str):
            raise WorkloadError(f"{where}: field {field!r} missing or not a string")
    messages = case.get("messages")
    if (
        not isinstance(messages, list)
        or not messages
        or not all(isinstance(m, dict) and isinstance(m.get("role"), str)
                   and isinstance(m.get("content"), str) for m in messages)
    ):
        raise WorkloadError(f"{where}: messages must be a non-empty list of {{role, content}} strings")


def write_jsonl(cases: list[dict], path: str | os.PathLike) -> Path:
    """Check `cases` and write them one per line (UTF-8, non-ASCII kept readable)."""
    for i, case in enumerate(cases):
        check_case(case, f"case {i}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for case in cases:
            f.write(json.dumps(case, ensure_ascii=False) + "\n")
    return path
