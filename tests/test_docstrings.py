"""The worked examples in the docstrings run, so they cannot drift from the code."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

PACKAGES = ["lookahead", "lookahead.drafters", "lookahead.kernels", "lookahead.eval", "lookahead.eval.workloads"]


def modules() -> list[str]:
    """Every module of ours that has examples."""
    names = []
    for pkg in PACKAGES:
        names += [pkg] + [f"{pkg}.{m.name}" for m in pkgutil.iter_modules(importlib.import_module(pkg).__path__)]
    finder = doctest.DocTestFinder()
    return sorted(n for n in set(names) if not n.endswith("__main__")
                  and any(t.examples for t in finder.find(importlib.import_module(n))))


@pytest.mark.parametrize("name", modules())
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
