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
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn line
            if isinstance(obj, dict) and "id" in obj and not obj.get("error") and (keep is None or obj["id"] in keep):
                self.done.add(str(obj["id"]))
                kept.append(line + "\n")
        if "".join(kept) != text:  # rewrite atomically: a kill now still leaves the old file whole
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(kept), encoding="utf-8")
            os.replace(tmp, self.path)
