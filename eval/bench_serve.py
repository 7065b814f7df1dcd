"""Load benchmark over loopback HTTP: `lookahead serve` under Poisson arrivals, per controller.

For each workload, controller and arrival rate a fresh server (its own model, engine and
drafter state, warmed by one short request) is sent the workload's first `--limit` cases as
streaming chat requests arriving as a seeded Poisson process (the same arrival times for
every controller). Each client records its time to first token (TTFT), its time per output
token after the first (TPOT) and its latency from arrival to the last chunk. Controllers:
goodput, off, fixed (the whole tree of --max-nodes per request).

Server overhead: the same cases all at once, through HTTP and through the in-process API
(`Lookahead.results`), each on a fresh, warmed engine with the goodput controller: tokens/s of each.

Soak (--soak N): N streaming requests on one server, 8 clients at a time, each leaving after a
random number of chunks (or reading to the end); afterwards no KV block may be allocated, no
request left in the engine and no connection task left running.

  python -m lookahead.eval.bench_serve --workloads gec rag --rates 0.1 0.2 0.4 0.8 1.6 --limit 12
  python -m lookahead.eval.bench_serve --workloads gec --rates 0.2 0.5 1.0 --limit 6 --max-new-tokens 16 --soak 1000
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .load_requests import poisson_arrivals

CONTROLLERS = ("goodput", "off", "fixed")
RESULTS = Path(__file__).parent / "results"
WARM_UP = "Repeat exactly: one two three four."


@dataclass
class Timing:
    """One request as its client saw it (seconds, from the run's start)."""

    arrival: float
    first_token: float  # time of the first chunk with text
    end: float
    tokens: int


@dataclass
class Row:
    workload: str
    controller: str
    rate: float  # requests/s
    requests: int
    mean_latency_s: float
    ttft_p50_s: float
    ttft_p99_s: float
    tpot_p50_ms: float  # time per output token after the first
    tpot_p99_ms: float
    throughput: float  # output tokens/s from the first arrival to the last answer
    tau: float  # the server's tokens per target forward (its /metrics)
    mean_tree: float  # draft nodes the controller had verified per request and step


def body(case: dict) -> dict:
    """A workload case as an OpenAI chat request (its source as lookahead's extra field)."""
    out = {"messages": case["messages"]}
    if case.get("source"):
        out["source"] = case["source"]
    return out


def send(client, case: dict, max_tokens: int, at: float, t0: float) -> Timing:
    time.sleep(max(0.0, t0 + at - time.perf_counter()))
    first, tokens = None, 0
    b = body(case)
    stream = client.chat.completions.create(model="any", messages=b["messages"], max_tokens=max_tokens, stream=True,
                                            stream_options={"include_usage": True},
                                            extra_body={k: v for k, v in b.items() if k != "messages"})
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - t0
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    end = time.perf_counter() - t0
    return Timing(at, end if first is None else first, end, tokens)


def scrape(url: str) -> dict[str, float]:
    import urllib.request

    text = urllib.request.urlopen(url.removesuffix("/v1") + "/metrics").read().decode()
    return {k: float(v) for k, v in (ln.rsplit(" ", 1) for ln in text.splitlines() if not ln.startswith("#"))}


def start(args, controller: str, lm=None):
    from lookahead.engine import EngineConfig
    from lookahead.serve import serve_in_background

    config = EngineConfig(controller=controller, max_nodes=args.max_nodes, max_batch_size=args.max_batch_size)
    return serve_in_background(args.model, lm=lm, dtype=args.dtype, config=config, max_queue=10_000)


def open_lm(args, controller: str):
    from lookahead.api import Lookahead
    from lookahead.engine import EngineConfig

    config = EngineConfig(controller=controller, max_nodes=args.max_nodes, max_batch_size=args.max_batch_size)
    lm = Lookahead(args.model, dtype=args.dtype, config=config, task="gec")  # as the server builds it
    list(lm.results(WARM_UP, max_new_tokens=8))
    return lm


def run_rate(args, workload: str, cases: list[dict], controller: str, rate: float) -> Row:
    import openai

    with start(args, controller, open_lm(args, controller)) as server:
        client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=600)
        arrivals = poisson_arrivals(len(cases), rate, args.seed)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(len(cases)) as pool:
            timings = list(pool.map(lambda ca: send(client, ca[0], args.max_new_tokens, ca[1], t0),
                                    zip(cases, arrivals.tolist())))
        m = scrape(server.url)
    lat = np.array([t.end - t.arrival for t in timings])
    ttft = np.array([t.first_token - t.arrival for t in timings])
    tpot = np.array([(t.end - t.first_token) / max(1, t.tokens - 1) for t in timings]) * 1e3
    tokens = sum(t.tokens for t in timings)
    span = max(t.end for t in timings) - min(t.arrival for t in timings)
    return Row(workload, controller, rate, len(cases), float(lat.mean()), *np.percentile(ttft, [50, 99]).tolist(),
               *np.percentile(tpot, [50, 99]).tolist(), tokens / span,
               m["lookahead_tokens_per_forward"], m["lookahead_tree_nodes_sum"] / max(1, m["lookahead_tree_nodes_count"]))


def overhead(args, cases: list[dict], rounds: int = 2) -> dict:
    """tokens/s of one burst of `cases` through Lookahead.results and through HTTP (goodput, fresh engines),
    `rounds` times in turn; the best of each (a process's first bursts pay one-time compilation)."""
    import openai

    api, http = [], []
    for _ in range(rounds):
        lm = open_lm(args, "goodput")
        t0 = time.perf_counter()
        results = list(lm.results([{"id": str(i), **body(c)} for i, c in enumerate(cases)],
                                  max_new_tokens=args.max_new_tokens))
        api.append((sum(r.output_tokens for r in results), time.perf_counter() - t0))
        with start(args, "goodput", open_lm(args, "goodput")) as server:
            client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=600)
            t0 = time.perf_counter()
            with ThreadPoolExecutor(len(cases)) as pool:
                timings = list(pool.map(lambda c: send(client, c, args.max_new_tokens, 0.0, t0), cases))
            http.append((sum(t.tokens for t in timings), time.perf_counter() - t0))
    api_tok_s, http_tok_s = max(n / s for n, s in api), max(n / s for n, s in http)
    return {"requests": len(cases), "rounds": rounds, "api_tok_s": api_tok_s, "http_tok_s": http_tok_s,
            "api_runs": api, "http_runs": http, "overhead": 1 - http_tok_s / api_tok_s}


def soak(args, cases: list[dict], n: int) -> dict:
    """n streaming requests, 8 at a time, each client leaving at a random point (or reading to the end)."""
    import openai

    rng = random.Random(args.seed)
    plan = [(cases[i % len(cases)], rng.choice((None, 0, 1, 3, 8))) for i in range(n)]  # None: reads it all
    left = [0]
    lock = threading.Lock()
    with start(args, "goodput", open_lm(args, "goodput")) as server:
        client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=600)

        def one(item):
            case, leave = item
            b = body(case)
            stream = client.chat.completions.create(model="any", messages=b["messages"], stream=True,
                                                    max_tokens=args.max_new_tokens,
                                                    extra_body={k: v for k, v in b.items() if k != "messages"})
            for i, _ in enumerate(stream):
                if i == leave:
                    with lock:
                        left[0] += 1
                    break
            stream.close()

        t0 = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, plan))
        seconds = time.perf_counter() - t0
        end = time.monotonic() + 30
        engine, tasks = server.server.engine, server.server.uvicorn.server_state.tasks
        while (engine.running() or engine.waiting() or tasks) and time.monotonic() < end:
            time.sleep(0.05)
        running_tasks = len(tasks)  # counted before the scrape, whose own connection is a task too
        m = scrape(server.url)
        out = {"requests": n, "clients_left_early": left[0], "seconds": seconds,
               "cancelled": m['lookahead_requests_total{outcome="cancelled"}'],
               "served": m['lookahead_requests_total{outcome="served"}'],  # the warm-up ran in-process
               "kv_blocks_allocated": engine.total_blocks - engine.free_blocks(),
               "requests_in_engine": engine.running() + engine.waiting() + len(engine._jobs),
               "connection_tasks_running": running_tasks}
    return out


def markdown(rows: list[Row]) -> str:
    off = {(r.workload, r.rate): r.mean_latency_s for r in rows if r.controller == "off"}
    head = ("| workload | rate req/s | controller | mean latency s | latency ÷ off | TTFT p50 / p99 s "
            "| TPOT p50 / p99 ms | throughput tok/s | τ | mean tree |\n|---|---|---|---|---|---|---|---|---|---|")
    body_ = [f"| {r.workload} | {r.rate:g} | {r.controller} | {r.mean_latency_s:.2f} "
             f"| {r.mean_latency_s / off[(r.workload, r.rate)]:.2f} | {r.ttft_p50_s:.2f} / {r.ttft_p99_s:.2f} "
             f"| {r.tpot_p50_ms:.0f} / {r.tpot_p99_ms:.0f} | {r.throughput:.1f} | {r.tau:.2f} | {r.mean_tree:.1f} |"
             if (r.workload, r.rate) in off else "" for r in rows]
    return "\n".join([head, *body_]) + "\n"


def plot(rows: list[Row], path: Path) -> str:
    """Mean latency against rate, one line per controller and workload; a note when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        return "no plot: matplotlib is not installed"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key in dict.fromkeys((r.workload, r.controller) for r in rows):
        sel = [r for r in rows if (r.workload, r.controller) == key]
        ax.plot([r.rate for r in sel], [r.mean_latency_s for r in sel], marker="o", label=" / ".join(key))
    ax.set(xlabel="arrival rate (requests/s)", ylabel="mean latency (s)", title="lookahead serve over HTTP")
    ax.legend()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return f"plot: {path}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workloads", nargs="+", default=["gec", "rag"])
    p.add_argument("--rates", nargs="+", type=float, default=[0.1, 0.2, 0.4, 0.8, 1.6], help="requests/s")
    p.add_argument("--controllers", nargs="+", default=list(CONTROLLERS), choices=CONTROLLERS)
    p.add_argument("--limit", type=int, default=12, help="requests per rate (the workload's first cases)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--max-nodes", type=int, default=32)
    p.add_argument("--max-batch-size", type=int, default=8)
    p.add_argument("--model", default=None, help="default: the bundled SmolLM2")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--soak", type=int, default=0, help="requests of the disconnect soak (0: none)")
    p.add_argument("--name", default="serve-cpu-smollm2")
    args = p.parse_args(argv)

    import torch

    from lookahead.samples import load_workload

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rows, over, soaked = [], {}, None
    for workload in args.workloads:
        cases = load_workload(workload, limit=args.limit)
        for controller in args.controllers:
            for rate in args.rates:
                rows.append(run_rate(args, workload, cases, controller, rate))
                print(json.dumps(asdict(rows[-1])), flush=True)
        over[workload] = overhead(args, cases)
        print(json.dumps({"overhead": workload, **over[workload]}), flush=True)
    if args.soak:
        soaked = soak(args, load_workload(args.workloads[0]), args.soak)
        print(json.dumps({"soak": soaked}), flush=True)
    RESULTS.mkdir(exist_ok=True)
    meta = {"command": "python -m lookahead.eval.bench_serve " + " ".join(argv or sys.argv[1:]),
            "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    (RESULTS / f"{args.name}.json").write_text(json.dumps({**meta, "rows": [asdict(r) for r in rows],
                                                           "overhead": over, "soak": soaked}, indent=1))
    table = markdown(rows)
    note = plot(rows, RESULTS / f"{args.name}.png")
    lines = [table, "", "| workload | HTTP tok/s | in-process tok/s | overhead |", "|---|---|---|---|"]
    lines += [f"| {w} | {o['http_tok_s']:.1f} | {o['api_tok_s']:.1f} | {o['overhead'] * 100:.1f} % |"
              for w, o in over.items()]
    if soaked is not None:
        lines += ["", "soak: " + json.dumps(soaked)]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines + ["", note]) + "\n")
    print("\n".join(lines + [note]))


if __name__ == "__main__":
    main()
