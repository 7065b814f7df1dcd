"""The one interface every drafter implements (request lifecycle as in SuffixDecoding).

A drafter never calls a model: it guesses from token ids it has seen.

>>> from lookahead.drafters import PromptLookupDrafter, TreeBudget
>>> d = PromptLookupDrafter()
>>> d.start("r1", [1, 2, 3, 4, 1, 2])
>>> d.propose("r1", TreeBudget(8, 4)).paths()
[[3, 4, 1, 2]]
>>> d.update("r1", [3]); d.stop("r1")
>>> d.propose("r1", TreeBudget(8, 4))
Traceback (most recent call last):
lookahead.drafters.base.DrafterError: unknown request id 'r1' (never started, or stopped)
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from .tree import DraftTree, TreeBudget


class DrafterError(ValueError):
    """A drafter used out of its lifecycle: a request id started twice, or used before start or after stop."""


class RequestStates(dict):
    """A drafter's per-request state, by request id, with explicit lifecycle errors.

    >>> states = RequestStates(); states.begin("r", [1, 2])
    >>> states.begin("r", [3])
    Traceback (most recent call last):
    lookahead.drafters.base.DrafterError: request 'r' already started
    >>> states.end("r"), "r" in states
    ([1, 2], False)
    """

    def begin(self, request_id: str, state) -> None:
        if request_id in self:
            raise DrafterError(f"request {request_id!r} already started")
        self[request_id] = state

    def end(self, request_id: str):
        """The request's state, forgotten."""
        state = self[request_id]
        del self[request_id]
        return state

    def __missing__(self, request_id: str):
        raise DrafterError(f"unknown request id {request_id!r} (never started, or stopped)")


class Drafter(ABC):
    """start → (propose → update)* → stop, per request id; out of that order: DrafterError."""

    name: str = "drafter"
    successors_wanted: int = 0  # k > 0: observe_successors gets the target's k likeliest tokens per position

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

    def observe_successors(self, request_id: str, successors) -> None:
        """Right before `update` with n tokens: int64 [n, successors_wanted], row i the target's likeliest
        tokens, best first, at the position where it chose the i-th of them (row 0: after the tokens so
        far). Only committed positions, whose logits plain decoding computes too, so a drafter that
        learns from them drafts the same with or without speculation."""
