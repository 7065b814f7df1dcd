"""A request as the engine tracks it, and the rule that isolates its failures from the batch's."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from lookahead.engine.config import SamplingParams


@dataclass
class Request:
    id: str
    prompt_ids: list[int]
    params: SamplingParams
    tokens: list[int] = field(default_factory=list)  # prompt + output so far
    kv_len: int = 0  # positions of `tokens` whose KV is cached
    forwards: int = 0  # target passes that produced tokens for this request
    drafted: int = 0  # draft nodes verified
    accepted: int = 0  # draft nodes accepted
    arrived: float = 0.0
    first_token_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    rng: np.random.Generator | None = None
    source_ids: list[int] | None = None  # text a rewriting request copies from (for source-aware drafters)
    logprobs: list[dict] = field(default_factory=list)  # per output token, when params.logprobs is set
    stop_text_end: int | None = None  # a stop string ended the output: its text is cut here (characters)
    successors: list[list[int]] = field(default_factory=list)  # per output token, the target's likeliest there

    @property
    def output_ids(self) -> list[int]:
        return self.tokens[len(self.prompt_ids) :]

    @property
    def done(self) -> bool:
        return self.finished_at is not None

    @property
    def prefilling(self) -> bool:
        """More than the bonus token still lacks its KV: the prompt is being fed in chunks."""
        return len(self.tokens) - self.kv_len > 1


def isolated(req: Request, fn):
    """Run one request's part of a stage; an exception fails that request alone (`req.error`, None returned).

    Running out of GPU memory is the whole step's problem, not the request's: it propagates, and
    the step retries smaller (memory.py).

    >>> r = Request("r", [1], SamplingParams())
    >>> isolated(r, lambda: 1 // 0), r.error
    (None, 'ZeroDivisionError: integer division or modulo by zero')
    """
    try:
        return fn()
    except torch.OutOfMemoryError:
        raise
    except Exception as e:  # isolation: the batch goes on without it
        req.error = f"{type(e).__name__}: {e}"
        return None
