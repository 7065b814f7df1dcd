"""Markdown tables, as every benchmark prints them.

>>> print(markdown_table(["system", "τ"], [["plain", "1.00"], ["auto", "3.56"]]))
| system | τ |
|---|---|
| plain | 1.00 |
| auto | 3.56 |
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
