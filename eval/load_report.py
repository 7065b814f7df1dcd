"""What a load run reports, per workload, controller and arrival rate: one row, a table, a plot.

Definitions (the same for real runs and the simulator):

  latency     finish time − arrival time of a request (its queueing included)
  throughput  output tokens / (last finish − first arrival): what the clients saw
  goodput     output tokens / busy seconds (seconds inside engine steps): tokens
              the server produces per second of work, whatever the idle gaps
  tree        draft nodes verified / target forwards, per request: the mean
              verified tree size (0 for plain decoding)
  τ           output tokens / target forwards, per request

>>> rows = [summarize("gec", "off", 0.5, 1.0, [RequestTiming(0.0, 2.0, 10, 10, 0)], busy_s=2.0),
...         summarize("gec", "goodput", 0.5, 1.0, [RequestTiming(0.0, 1.0, 10, 4, 12)], busy_s=1.0)]
>>> [(r.controller, r.mean_latency_s, r.tau, r.mean_tree, r.vs_off) for r in with_ratios(rows)]
[('off', 2.0, 1.0, 0.0, 1.0), ('goodput', 1.0, 2.5, 3.0, 0.5)]
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class RequestTiming:
    arrival: float  # seconds on the run's clock
    finish: float
    output_tokens: int
    forwards: int  # target forwards that produced its tokens
    drafted: int  # draft nodes verified for it


@dataclass
class LoadRow:
    workload: str
    controller: str  # goodput, fixed-N (N nodes per request), off
    load: float  # arrival rate / measured plain-decoding capacity
    rate: float  # requests per second
    requests: int
    mean_latency_s: float
    p99_latency_s: float
    throughput: float  # tokens/s
    goodput: float  # tokens per busy second
    mean_tree: float
    tau: float
    vs_off: float = float("nan")  # mean latency / off's at the same rate


def summarize(workload: str, controller: str, load: float, rate: float, timings: list[RequestTiming],
              busy_s: float) -> LoadRow:
    lat = np.array([t.finish - t.arrival for t in timings])
    tokens = sum(t.output_tokens for t in timings)
    forwards = max(1, sum(t.forwards for t in timings))
    span = max(t.finish for t in timings) - min(t.arrival for t in timings)
    return LoadRow(workload, controller, load, rate, len(timings), float(lat.mean()),
                   float(np.percentile(lat, 99)), tokens / span, tokens / max(busy_s, 1e-9),
                   sum(t.drafted for t in timings) / forwards, tokens / forwards)


def off_latency(rows: list[LoadRow]) -> dict[tuple[str, float], float]:
    """Plain decoding's mean latency, by workload and load, among `rows`."""
    return {(r.workload, r.load): r.mean_latency_s for r in rows if r.controller == "off"}


def with_ratios(rows: list[LoadRow]) -> list[LoadRow]:
    """Fill vs_off: each row's mean latency over plain decoding's at the same workload and load."""
    off = off_latency(rows)
    for r in rows:
        if (r.workload, r.load) in off:
            r.vs_off = r.mean_latency_s / off[(r.workload, r.load)]
    return rows


def markdown(rows: list[LoadRow]) -> str:
    """The table of `rows`; latency ÷ off is taken from the off row among them at the same workload and
    load, as with_ratios fills vs_off for the JSON ("—" where they have none)."""
    off = off_latency(rows)
    head = ("| workload | load | rate req/s | controller | mean latency s | p99 latency s | throughput tok/s "
            "| goodput tok/busy-s | mean tree | τ | latency ÷ off |\n|---|---|---|---|---|---|---|---|---|---|---|")
    body = [f"| {r.workload} | {r.load:.2f} | {r.rate:.3f} | {r.controller} | {r.mean_latency_s:.2f} "
            f"| {r.p99_latency_s:.2f} | {r.throughput:.1f} | {r.goodput:.1f} | {r.mean_tree:.1f} | {r.tau:.2f} "
            f"| {ratio_cell(r, off)} |" for r in rows]
    return "\n".join([head, *body])


def ratio_cell(row: LoadRow, off: dict[tuple[str, float], float]) -> str:
    key = (row.workload, row.load)
    return f"{row.mean_latency_s / off[key]:.2f}" if key in off else "—"


def write_json(path, rows: list[LoadRow], **extra) -> None:
    with open(path, "w") as f:
        json.dump({**extra, "rows": [asdict(r) for r in rows]}, f, indent=1)


def plot(rows: list[LoadRow], path, title: str) -> None:
    """Mean latency against arrival rate, one line per controller, one panel per workload (log latency)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on these machines
    import matplotlib.pyplot as plt

    workloads = list(dict.fromkeys(r.workload for r in rows))
    fig, axes = plt.subplots(1, len(workloads), figsize=(5.5 * len(workloads), 4), squeeze=False)
    for ax, w in zip(axes[0], workloads):
        for c in dict.fromkeys(r.controller for r in rows):
            pts = sorted((r.rate, r.mean_latency_s) for r in rows if r.workload == w and r.controller == c)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=c)
        ax.set_yscale("log")
        ax.set_xlabel("arrival rate (requests/s)")
        ax.set_ylabel("mean latency (s)")
        ax.set_title(w)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
