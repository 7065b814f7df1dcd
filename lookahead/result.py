"""What a request gives back: its output, how it was decoded, or why it failed.

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

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("token_ids", "prompt_ids")}
        d["output_ids"] = self.token_ids
        return d


def failed_result(rid: str, error: str) -> Result:
    """The Result of a request that never ran."""
    return Result(rid, "", [], 0, 0, 0, 0.0, 0.0, 0, 0, "error", error)
