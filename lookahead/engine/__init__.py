"""The engine and the stages of its step (propose → prune → verify → accept → commit → update).

  config.py           EngineConfig and SamplingParams: every option's default and valid range
  loop.py             Engine: admission, the step, out-of-memory back-off, requests' lifecycle
  controller.py       prune: the goodput controller; cost_model.py its online step-cost model
  tree_inputs.py      verify's inputs: flattened tokens, positions, ancestor bitmasks
  attention.py        verify's attention hook into transformers; kv_cache.py the paged cache
  cpu_linear.py       verify's tree-invariant linear layers on the CPU
  acceptance.py       accept: greedy and lossless sampling over a tree
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
    if name in ("Engine", "Request"):
        from . import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'lookahead.engine' has no attribute {name!r}")
