"""What a request gives back: its output, how it was decoded, or why it failed; and, while it runs, its
new tokens as they are accepted.

>>> failed_result("q1", "request q1: empty prompt").to_dict()["finish_reason"]
'error'
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Result:
    id: str
    text: str
    token_ids: list[int]
    prompt_tokens: int
    output_tokens: int
    target_forwards: int
    tau: float  # output tokens per target forward
    latency_s: float
    drafted: int  # draft nodes verified
    accepted: int  # draft nodes accepted
    finish_reason: str  # "stop", "length" or "error"
    error: str | None = None
    prompt_ids: list[int] | None = None
    logprobs: list[dict] | None = None  # per output token when asked for: token, id, logprob, top_logprobs
    successors: list[list[int]] | None = None  # per output token, the target's likeliest there (for traces)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__
             if k not in ("token_ids", "prompt_ids", "logprobs", "successors")}
        d["output_ids"] = self.token_ids
        if self.logprobs is not None:
            d["logprobs"] = self.logprobs
        return d


@dataclass
class Chunk:
    """A request's output since its previous chunk, as the engine accepts it (Lookahead.stream)."""

    id: str
    token_ids: list[int]  # tokens accepted since the previous chunk
    text: str  # their text (held back while the text ends inside a multi-byte character)
    result: Result | None = None  # the whole Result, on the request's last chunk


def failed_result(rid: str, error: str) -> Result:
    """The Result of a request that never ran."""
    return Result(rid, "", [], 0, 0, 0, 0.0, 0.0, 0, 0, "error", error)
