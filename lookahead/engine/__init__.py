"""The engine and the stages of its step (propose → prune → verify → accept → commit → update).

  loop.py             Engine: admission, the step, out-of-memory back-off, requests' lifecycle
  controller.py       prune: the goodput controller; cost_model.py its online step-cost model
  tree_inputs.py      verify's inputs: flattened tokens, positions, ancestor bitmasks
  attention.py        verify's attention hook into transformers; kv_cache.py the paged cache
  cpu_linear.py       verify's tree-invariant linear layers on the CPU
  acceptance.py       accept: greedy and lossless sampling over a tree
  recorded_target.py  a target whose choices are recorded outputs (replay, simulation)

`Engine`, `EngineConfig`, `SamplingParams`, `Request` and `RequestError` are importable from
here; they load on first use, so the light modules above import without torch's start-up.

>>> from lookahead.engine import EngineConfig
>>> EngineConfig().exact
True
"""
from __future__ import annotations

_LOOP = ("Engine", "EngineConfig", "SamplingParams", "Request", "RequestError")
__all__ = list(_LOOP)


def __getattr__(name):
    if name in _LOOP:
        from . import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'lookahead.engine' has no attribute {name!r}")
