"""The engine and the stages of its step (propose → prune → verify → accept → commit → update).

  config.py           EngineConfig and SamplingParams: every option's default and valid range
  loop.py             Engine: admission, the step's stages in order, requests' lifecycle
  request.py          Request, and the rule that a request's failure stays its own
  step.py             the per-step values the stages pass on (StepItem, Verified, StepStats)
  propose.py          propose: each request's chain and drafted tree within its budget
  controller.py       prune: the goodput controller; cost_model.py its online step-cost model
  verify.py           verify: one forward over every chain and tree
  tree_inputs.py      verify's inputs: flattened tokens, positions, ancestor bitmasks
  attention.py        verify's attention hook into transformers; kv_cache.py the paged cache
  cpu_linear.py       verify's tree-invariant linear layers on the CPU
  accept.py           accept: per request, by the rules of acceptance.py (greedy, lossless sampling)
  commit.py           commit: the accepted path's KV from scratch into the paged cache
  update.py           update: tokens, counters and drafters past the new tokens
  memory.py           the out-of-memory back-off around verify → accept → commit
  recorded_target.py  a target whose choices are recorded outputs (replay, simulation)

`Engine`, `EngineConfig`, `SamplingParams`, `Request` and `RequestError` are importable from
here; `Engine` and `Request` load on first use, so the options import without torch's start-up.

>>> from lookahead.engine import EngineConfig
>>> EngineConfig().exact
True
"""
from __future__ import annotations

from .config import EngineConfig, RequestError, SamplingParams

__all__ = ["Engine", "EngineConfig", "SamplingParams", "Request", "RequestError"]


def __getattr__(name):
    if name == "Engine":
        from .loop import Engine

        return Engine
    if name == "Request":
        from .request import Request

        return Request
    raise AttributeError(f"module 'lookahead.engine' has no attribute {name!r}")
