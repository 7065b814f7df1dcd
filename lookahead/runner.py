"""What `lookahead run` does: read requests, decode them as a stream, write each result as it finishes."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


@dataclass
class RunOptions:
    input: Path | None = None
    workload: str | None = None
    output: Path | None = None
    model: str | None = None
    drafter: str = "prompt-lookup"
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    dtype: str = "float32"
    device: str = "auto"
    max_nodes: int = 32
    max_depth: int = 16
    max_batch_size: int = 8
    controller: str = "goodput"
    limit: int | None = None
    corpus: list[str] = field(default_factory=list)
    trace_output: Path | None = None
    as_json: bool = False


def load_specs(opts: RunOptions):
    from lookahead.eval.workloads import bundled_path

    from .requests_io import read_requests

    path = opts.input if opts.input is not None else bundled_path(opts.workload)
    lines = read_requests(path)
    return lines[: opts.limit] if opts.limit else lines


def run_requests(opts: RunOptions) -> dict:
    from .api import Lookahead
    from .engine import EngineConfig
    from .requests_io import result_line

    console = Console(stderr=True)
    lines = load_specs(opts)
    task = "gec" if opts.workload in ("gec", "gec-ua") else None
    with console.status("loading model"):
        lm = Lookahead(opts.model, drafter=opts.drafter, dtype=opts.dtype, device=opts.device, corpus=opts.corpus,
                       task=task, config=EngineConfig(max_nodes=opts.max_nodes, max_depth=opts.max_depth,
                                                      max_batch_size=opts.max_batch_size,
                                                      controller=opts.controller))
    specs = {spec.id: spec for spec, _ in lines if spec is not None}
    out = open(opts.output, "w", encoding="utf-8") if opts.output else None
    trace = open(opts.trace_output, "w", encoding="utf-8") if opts.trace_output else None
    results, failed = [], 0
    start = time.perf_counter()
    progress = Progress(TextColumn("[bold]decoding"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.fields[rate]}"), console=console, transient=opts.as_json)
    try:
        with progress:
            bar = progress.add_task("run", total=len(lines), rate="")
            for i, (spec, error) in enumerate(lines):
                if spec is None:  # a bad line is reported in the output, the others still run
                    failed += 1
                    write(out, {"id": f"invalid-{i}", "error": error, "finish_reason": "error"})
                    progress.advance(bar)
            stream = lm.stream(list(specs.values()), max_new_tokens=opts.max_new_tokens,
                               temperature=opts.temperature, top_p=opts.top_p, seed=opts.seed)
            for res in stream:
                spec = specs[res.id]
                failed += res.error is not None
                results.append(res)
                write(out, result_line(spec, res.to_dict()))
                if trace is not None and res.error is None:
                    write(trace, {"id": res.id, "prompt_ids": res.prompt_ids, "output_ids": res.token_ids})
                tokens = sum(r.output_tokens for r in results)
                progress.update(bar, advance=1, rate=f"{tokens / (time.perf_counter() - start):.1f} tok/s")
    finally:
        for f in (out, trace):
            if f is not None:
                f.close()
    summary = summarize(results, failed, time.perf_counter() - start, lm, opts)
    if not opts.as_json:
        print_summary(console, summary, results if opts.output is None else [])
    return summary


def write(f, obj: dict) -> None:
    if f is not None:
        f.write(json.dumps(obj, ensure_ascii=False) + "\n")
        f.flush()  # a kill loses at most the request in flight


def summarize(results, failed: int, seconds: float, lm, opts: RunOptions) -> dict:
    ok = [r for r in results if r.error is None]
    tokens = sum(r.output_tokens for r in ok)
    forwards = sum(r.target_forwards for r in ok)
    lat = sorted(r.latency_s for r in ok)
    return {
        "model": lm.model_name, "drafter": opts.drafter, "device": str(lm.engine.device), "dtype": opts.dtype,
        "requests": len(ok), "failed": failed, "output_tokens": tokens, "target_forwards": forwards,
        "tau": tokens / max(1, forwards), "tokens_per_s": tokens / max(seconds, 1e-9), "wall_s": seconds,
        "latency_p50_s": lat[len(lat) // 2] if lat else 0.0,
        "latency_p99_s": lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else 0.0,
    }


def print_summary(console: Console, s: dict, shown) -> None:
    for r in shown:
        console.print(f"[bold]{r.id}[/bold] ({r.output_tokens} tokens, τ {r.tau:.2f}):")
        console.print(r.text if r.error is None else f"[red]error: {r.error}[/red]", markup=False, highlight=False)
    table = Table(title=f"lookahead run · {s['model']} · drafter {s['drafter']} · {s['device']} {s['dtype']}")
    for col in ("requests", "failed", "output tokens", "τ (tokens/forward)", "tokens/s", "wall s"):
        table.add_column(col, justify="right")
    table.add_row(str(s["requests"]), str(s["failed"]), str(s["output_tokens"]), f"{s['tau']:.2f}",
                  f"{s['tokens_per_s']:.1f}", f"{s['wall_s']:.1f}")
    console.print(table)
