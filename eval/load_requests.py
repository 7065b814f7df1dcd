"""The requests of a load run and when they arrive: bundled workloads or recorded traces, Poisson times.

A load request is a prompt (token ids), the source text a rewriting request copies
from (for the source-aligned drafter), and, when it comes from a trace, the
recorded greedy output that a model-free run replays.

>>> t = poisson_arrivals(4, rate=2.0, seed=0)
>>> len(t), bool((t[1:] > t[:-1]).all()), bool(t[0] > 0)
(4, True, True)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class LoadRequest:
    id: str
    prompt_ids: list[int]  # [P] as the target sees it
    source_ids: list[int] | None = None  # [S] text to copy from (gec), None for other tasks
    output_ids: list[int] | None = None  # [O] recorded greedy output (trace requests only)


def poisson_arrivals(n: int, rate: float, seed: int) -> np.ndarray:
    """float64 [n]: arrival times in seconds of a Poisson process of `rate` requests/s.

    Gaps are exponential with mean 1/rate. The same seed at every controller gives
    every controller the same arrival times (common random numbers): their latency
    differences are not sampling noise of the arrivals.
    """
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    return np.random.default_rng(seed).exponential(1.0 / rate, n).cumsum()


def bundled_tokenizer():
    """The bundled SmolLM2's tokenizer (the one whose ids the workloads' traces hold)."""
    import transformers

    from lookahead.models import convert_gguf, resolve_model_path

    return transformers.AutoTokenizer.from_pretrained(convert_gguf(resolve_model_path(None)))


def from_workload(name: str, tokenizer, limit: int | None = None) -> list[LoadRequest]:
    """The bundled workload's first `limit` cases, encoded as `lookahead run` encodes them."""
    from lookahead.eval.workloads import load_workload
    from lookahead.run.requests_io import RequestSpec, encode_prompt

    out = []
    for case in load_workload(name, limit=limit):
        prompt = encode_prompt(tokenizer, RequestSpec(case["id"], messages=case["messages"]))
        out.append(LoadRequest(case["id"], prompt, _encode_source(tokenizer, case)))
    return out


def from_trace(path, workload: str | None = None, tokenizer=None) -> list[LoadRequest]:
    """A trace's records; with `workload` and `tokenizer`, the source of each case whose id matches."""
    from lookahead.replay import read_trace

    sources = {}
    if workload is not None:
        from lookahead.eval.workloads import load_workload

        sources = {c["id"]: _encode_source(tokenizer, c) for c in load_workload(workload)}
    return [LoadRequest(r.id, r.prompt_ids, sources.get(r.id), r.output_ids) for r in read_trace(path)]


def _encode_source(tokenizer, case: dict) -> list[int] | None:
    # As the API encodes a request's source: the bare text, no special tokens.
    source = case.get("source")
    return None if source is None else tokenizer(source, add_special_tokens=False)["input_ids"]
