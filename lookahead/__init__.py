"""lookahead: model-free speculative decoding with token trees.

>>> import lookahead
>>> lookahead.Lookahead.__name__
'Lookahead'
"""
from __future__ import annotations

__all__ = ["Lookahead", "Result", "EngineConfig", "SamplingParams", "Fleet"]


def __getattr__(name):
    # Lazy: `import lookahead` (and the CLI's --help) must not pay for torch and transformers.
    if name in ("Lookahead", "Result"):
        from lookahead import api

        return getattr(api, name)
    if name == "Fleet":  # needs the optional Ray extra only once it starts
        from lookahead.fleet.driver import Fleet

        return Fleet
    if name in ("EngineConfig", "SamplingParams"):
        from lookahead import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'lookahead' has no attribute {name!r}")
