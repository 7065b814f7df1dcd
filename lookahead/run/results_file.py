"""The results file: one JSON line per finished request, written whole, and resumable.

Each line goes out in one `os.write` on a file opened with O_APPEND, so an
interrupt (Ctrl-C raises between system calls, never inside one) or a kill leaves
only whole lines behind; resuming still drops a torn last line, for a crash of
the machine itself.

>>> import pathlib, tempfile
>>> path = pathlib.Path(tempfile.mkdtemp()) / "out.jsonl"
>>> f = ResultsFile(path); f.write({"id": "a", "error": None}); f.write({"id": "b", "error": "too long"}); f.close()
>>> with open(path, "a") as torn: _ = torn.write('{"id": "c", "te')        # a half line
>>> f = ResultsFile(path, resume=True); sorted(f.done)                   # b failed: it runs again
['a']
>>> f.close(); path.read_text()
'{"id": "a", "error": null}\\n'
"""
from __future__ import annotations

import json
import os
from pathlib import Path


def finished_ids(path: str | os.PathLike) -> set[str]:
    """Ids of the requests that finished without error in a results file (none if there is no file)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, IsADirectoryError):
        return set()
    return {str(obj["id"]) for obj in map(_parse, text.splitlines()) if obj is not None and not obj.get("error")}


def _parse(line: str) -> dict | None:
    """A result line's object; None for a torn or foreign line."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) and "id" in obj else None


class InOrder:
    """Passes each (id, item) on to `emit` in the order of `ids`, as soon as every earlier one has come.

    >>> shown = []
    >>> ordered = InOrder(["a", "b", "c"], shown.append)
    >>> ordered.put("b", 2); ordered.put("a", 1); shown
    [1, 2]
    """

    def __init__(self, ids: list[str], emit):
        self.order, self.emit, self.next, self.held = list(ids), emit, 0, {}

    def put(self, rid: str, item) -> None:
        self.held[rid] = item
        while self.next < len(self.order) and self.order[self.next] in self.held:
            self.emit(self.held.pop(self.order[self.next]))
            self.next += 1


class ResultsFile:
    """Appends result lines to `path` (truncating it first unless `resume`).

    resume: keep the finished lines already there (`done` holds their ids) and drop
        the rest: failed requests and bad input lines run and are recorded again,
        so every id ends up in the file exactly once.
    keep: with `resume`, keep only lines whose id is in this set (a trace file follows
        its results file).
    """

    def __init__(self, path: str | os.PathLike, resume: bool = False, keep: set[str] | None = None):
        self.path = Path(path)
        self.done: set[str] = set()
        if resume and self.path.exists():
            self._keep_finished(keep)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (0 if resume else os.O_TRUNC)
        try:
            self._fd = os.open(self.path, flags, 0o644)
        except OSError as e:
            raise ValueError(f"cannot write {self.path}: {e.strerror}") from None

    def write(self, obj: dict) -> None:
        data = (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")
        while data:  # a regular file takes it all at once; loop only for a short write
            data = data[os.write(self._fd, data):]

    def close(self) -> None:
        os.close(self._fd)

    def _keep_finished(self, keep: set[str] | None) -> None:
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except IsADirectoryError:
            raise ValueError(f"output is a directory, expected a file: {self.path}") from None
        kept = []
        for line in text.splitlines():
            obj = _parse(line)  # None: a torn line
            if obj is not None and not obj.get("error") and (keep is None or obj["id"] in keep):
                self.done.add(str(obj["id"]))
                kept.append(line + "\n")
        if "".join(kept) != text:  # rewrite atomically: a kill now still leaves the old file whole
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(kept), encoding="utf-8")
            os.replace(tmp, self.path)
