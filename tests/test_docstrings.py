"""The worked examples in the docstrings run, so they cannot drift from the code."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

# The installed packages whose folders differ (drafters/, kernels/, eval/ map into lookahead).
PACKAGES = ["lookahead", "lookahead.drafters", "lookahead.kernels", "lookahead.eval"]


def modules() -> list[str]:
    """Every module of ours that has examples, in every subpackage."""
    names = []
    for pkg in PACKAGES:
        path = importlib.import_module(pkg).__path__
        names += [pkg] + [m.name for m in pkgutil.walk_packages(path, f"{pkg}.")]
    finder = doctest.DocTestFinder()
    return sorted(n for n in set(names) if not n.endswith("__main__")
                  and any(t.examples for t in finder.find(importlib.import_module(n))))


@pytest.mark.parametrize("name", modules())
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
