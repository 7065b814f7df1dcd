"""Reading a retrieval corpus from files into documents (strings), with one-line errors.

Formats, chosen by the file name:
- `*.jsonl`: one JSON object per line with a string field "text" (or "document",
  or "content", first found wins); blank lines are skipped.
- anything else: UTF-8 text, split into documents on blank lines (a file with no
  blank line is one document).

>>> import pathlib, tempfile
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "a.txt").write_text("first doc\\n\\nsecond doc\\n")
>>> _ = (d / "b.jsonl").write_text('{"text": "third"}\\n{"content": "fourth"}\\n')
>>> read_documents([d / "a.txt", d / "b.jsonl"])
['first doc', 'second doc', 'third', 'fourth']
>>> _ = (d / "c.jsonl").write_text('{"text": "ok"}\\nnot json\\n')
>>> read_documents([d / "c.jsonl"])
Traceback (most recent call last):
...
lookahead.drafters.corpus.CorpusError: ...c.jsonl:2: invalid JSONL line (expected a JSON object with a "text", "document" or "content" string)
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable
from os import PathLike
from pathlib import Path

TEXT_FIELDS = ("text", "document", "content")


class CorpusError(ValueError):
    """A corpus file that cannot be used (user-facing: one line, no traceback)."""


def read_documents(paths: Iterable[str | PathLike]) -> list[str]:
    """All documents of all files, in order; raises CorpusError on the first bad file."""
    docs: list[str] = []
    for path in map(Path, paths):
        text = _read_text(path)
        if path.suffix.lower() == ".jsonl":
            docs.extend(_jsonl_documents(path, text))
        else:
            docs.extend(d.strip() for d in re.split(r"\n[ \t\r]*\n", text) if d.strip())
    return docs


def _read_text(path: Path) -> str:
    if not path.exists():
        raise CorpusError(f"{path}: no such corpus file")
    if path.is_dir():
        raise CorpusError(f"{path}: is a directory, expected a corpus file")
    data = path.read_bytes()
    if b"\0" in data:
        raise CorpusError(f"{path}: looks binary (contains NUL bytes), expected text or JSONL")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path}: not UTF-8 (bad byte at offset {e.start})") from None
    if not text.strip():
        raise CorpusError(f"{path}: is empty")
    return text


def _jsonl_documents(path: Path, text: str) -> list[str]:
    docs = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            obj = None
        field = next((f for f in TEXT_FIELDS if isinstance(obj, dict) and isinstance(obj.get(f), str)), None)
        if field is None:
            raise CorpusError(
                f'{path}:{lineno}: invalid JSONL line (expected a JSON object with a "text", '
                f'"document" or "content" string)'
            )
        if obj[field].strip():
            docs.append(obj[field])
    return docs
