"""What the server has done, as Prometheus text (GET /metrics).

`Metrics` is written by the engine thread (counters after each step and result) and by the
event loop (refusals), and read by the event loop; `render` writes any set of families.

>>> print(render([Family("lookahead_requests_total", "counter", "Requests by outcome.",
...                      [({"outcome": "served"}, 3), ({"outcome": "failed"}, 0)])]), end="")
# HELP lookahead_requests_total Requests by outcome.
# TYPE lookahead_requests_total counter
lookahead_requests_total{outcome="served"} 3
lookahead_requests_total{outcome="failed"} 0
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

RATE_WINDOW_S = 10.0  # tokens/s is measured over the last this many seconds


@dataclass
class Family:
    """One metric: its name, Prometheus type, help line and samples (labels, value)."""

    name: str
    type: str  # "counter", "gauge" or "summary"
    help: str
    samples: list[tuple[dict, float]]  # a summary's samples carry their own suffix in the label "__suffix"


def render(families: list[Family]) -> str:
    lines = []
    for f in families:
        lines += [f"# HELP {f.name} {f.help}", f"# TYPE {f.name} {f.type}"]
        for labels, value in f.samples:
            labels = dict(labels)
            name = f.name + labels.pop("__suffix", "")
            tags = ",".join(f'{k}="{v}"' for k, v in labels.items())
            lines.append(f"{name}{{{tags}}} {value:g}" if tags else f"{name} {value:g}")
    return "\n".join(lines) + "\n"


@dataclass
class Metrics:
    served: int = 0  # requests answered in full
    failed: int = 0  # requests that could not run, or that the engine failed
    cancelled: int = 0  # requests whose client went away
    refused: int = 0  # requests turned away: queue full or shutting down (503)
    tokens: int = 0  # output tokens generated, cancelled requests' included
    forwards: int = 0  # target forwards (engine steps over the batch)
    finished_tokens: int = 0  # output tokens of the answered requests ...
    finished_forwards: int = 0  # ... and the target forwards they took part in: τ = their ratio
    drafted: int = 0  # draft nodes verified for the answered requests
    accepted: int = 0  # of them, accepted
    step_seconds: float = 0.0  # time in target forwards
    tree_nodes: int = 0  # draft nodes verified, over every request and step ...
    tree_rows: int = 0  # ... and the request-steps they were verified in: the mean tree size
    started: float = field(default_factory=time.monotonic)
    _recent: deque = field(default_factory=deque)  # (time, tokens) of the steps in the rate window
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def on_step(self, requests: int, draft_nodes: int, seconds: float) -> None:
        self.forwards += 1
        self.step_seconds += seconds
        self.tree_nodes += draft_nodes
        self.tree_rows += requests

    def on_tokens(self, tokens: int) -> None:
        self.tokens += tokens
        with self._lock:
            self._recent.append((time.monotonic(), tokens))

    def on_result(self, output_tokens: int, forwards: int, drafted: int, accepted: int) -> None:
        self.served += 1
        self.finished_tokens += output_tokens
        self.finished_forwards += forwards
        self.drafted += drafted
        self.accepted += accepted

    def tokens_per_second(self) -> float:
        now = time.monotonic()
        with self._lock:
            while self._recent and self._recent[0][0] < now - RATE_WINDOW_S:
                self._recent.popleft()
            recent = sum(n for _, n in self._recent)
        return recent / max(1e-9, min(RATE_WINDOW_S, now - self.started))

    def families(self, waiting: int, running: int, free_blocks: int, total_blocks: int, up: bool) -> list[Family]:
        """Every metric, with the engine's gauges given by the caller."""
        def one(name, kind, text, value):
            return Family(name, kind, text, [({}, value)])

        return [
            Family("lookahead_requests_total", "counter", "Requests by outcome.",
                   [({"outcome": k}, getattr(self, k)) for k in ("served", "failed", "cancelled", "refused")]),
            one("lookahead_generated_tokens_total", "counter", "Output tokens generated.", self.tokens),
            one("lookahead_target_forwards_total", "counter", "Target model forwards (engine steps).", self.forwards),
            one("lookahead_tokens_per_forward", "gauge", "τ: output tokens per target forward of the answered "
                "requests.", self.finished_tokens / max(1, self.finished_forwards)),
            one("lookahead_tokens_per_second", "gauge", f"Output tokens per second over the last "
                f"{RATE_WINDOW_S:g} s.", self.tokens_per_second()),
            one("lookahead_requests_waiting", "gauge", "Requests queued, not yet decoding.", waiting),
            one("lookahead_requests_running", "gauge", "Requests decoding.", running),
            one("lookahead_draft_nodes_verified_total", "counter", "Draft nodes verified (answered requests).",
                self.drafted),
            one("lookahead_draft_nodes_accepted_total", "counter", "Draft nodes accepted (answered requests).",
                self.accepted),
            Family("lookahead_step_seconds", "summary", "Time of a target forward.",
                   [({"__suffix": "_sum"}, self.step_seconds), ({"__suffix": "_count"}, self.forwards)]),
            Family("lookahead_tree_nodes", "summary", "Draft tree nodes the controller had verified per request "
                   "and step.", [({"__suffix": "_sum"}, self.tree_nodes), ({"__suffix": "_count"}, self.tree_rows)]),
            one("lookahead_kv_blocks_free", "gauge", "KV cache blocks free.", free_blocks),
            one("lookahead_kv_blocks_total", "gauge", "KV cache blocks.", total_blocks),
            one("lookahead_engine_up", "gauge", "1 while the engine loop runs.", int(up)),
        ]
