"""The one interface every drafter implements (request lifecycle as in SuffixDecoding).

A drafter never calls a model: it guesses from token ids it has seen.

>>> from lookahead.drafters import PromptLookupDrafter, TreeBudget
>>> d = PromptLookupDrafter()
>>> d.start("r1", [1, 2, 3, 4, 1, 2])
>>> d.propose("r1", TreeBudget(8, 4)).paths()
[[3, 4, 1, 2]]
>>> d.update("r1", [3]); d.stop("r1")
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from .tree import DraftTree, TreeBudget


class Drafter(ABC):
    """start → (propose → update)* → stop, per request id."""

    name: str = "drafter"

    @abstractmethod
    def start(self, request_id: str, prompt_ids: Sequence[int]) -> None:
        """Begin a request whose context is `prompt_ids`."""

    @abstractmethod
    def propose(self, request_id: str, budget: TreeBudget) -> DraftTree:
        """Guess continuations of the request's tokens so far, within `budget`."""

    @abstractmethod
    def update(self, request_id: str, accepted_ids: Sequence[int]) -> None:
        """Append tokens the target committed (accepted drafts plus the bonus token)."""

    @abstractmethod
    def stop(self, request_id: str) -> None:
        """Forget the request (a shared store may keep its output)."""

    def set_source(self, request_id: str, source_ids: Sequence[int]) -> None:
        """Name the text a rewriting request copies from; only source-aware drafters use it."""
