"""Every drafter says plainly when it is used out of its lifecycle (start → (propose → update)* → stop)."""
from __future__ import annotations

import pytest

from lookahead.drafters import DrafterError, RetrievalStore, TreeBudget, make_drafter
from lookahead.engine.config import DRAFTERS
from lookahead.drafters.peers import HFChainDrafter

NAMES = [n for n in DRAFTERS if n != "none"]


def drafters():
    for name in NAMES:
        yield name, make_drafter(name, store=RetrievalStore(), task="gec")
    yield "hf-chain", HFChainDrafter()


@pytest.mark.parametrize("name, drafter", list(drafters()), ids=[n for n, _ in drafters()])
def test_misuse_is_a_drafter_error_naming_the_request(name, drafter):
    budget = TreeBudget(8, 4)
    with pytest.raises(DrafterError, match="unknown request id 'r'"):
        drafter.propose("r", budget)
    drafter.start("r", [1, 2, 3, 1, 2])
    with pytest.raises(DrafterError, match="request 'r' already started"):
        drafter.start("r", [1, 2])
    drafter.propose("r", budget)
    drafter.update("r", [3])
    drafter.stop("r")
    for misuse in (lambda: drafter.update("r", [4]), lambda: drafter.stop("r")):
        with pytest.raises(DrafterError, match="unknown request id 'r'"):
            misuse()
    drafter.start("r", [5, 6])  # a stopped id may start again
    drafter.stop("r")
