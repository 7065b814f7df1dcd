"""The README's Python examples run as written (with the real bundled model)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_block_runs(code, smollm2, capsys):
    exec(compile(code, str(README), "exec"), {})
    assert capsys.readouterr().out.strip()  # every example prints what it shows


def test_readme_has_python_examples():
    assert BLOCKS
