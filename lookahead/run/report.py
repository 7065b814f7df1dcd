"""The numbers `lookahead run` ends with: the summary dict (--json) and the table.

Speedup over plain decoding is measured when `--compare-plain` ran the same
requests with the drafter off, and estimated otherwise: both decodings are priced
by the engine's step cost model, fitted online to this run's measured steps, for
one request at a time. Plain decoding makes one token per forward of one query
token; speculative decoding made `output_tokens` in `target_forwards` forwards of
1 + drafted/forwards query tokens each.

>>> from lookahead.engine.cost_model import StepCostModel
>>> flat = StepCostModel.fixed(base=0.02, per_query_token=0.0001)   # 20 ms + 0.1 ms per query token
>>> r = Result("a", "", [], 100, 64, 16, 4.0, 1.0, 96, 48, "length")  # 64 tokens in 16 forwards of 7 queries
>>> round(estimated_speedup([r], flat), 2)                           # 64 × 20.1 ms / (16 × 20.7 ms)
3.88
"""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from lookahead.result import Result


def estimated_speedup(results: list[Result], cost_model) -> float | None:
    """Predicted plain-decoding time over predicted speculative time for these requests."""
    plain, spec = estimated_times(results, cost_model)
    return plain / spec if spec else None


def estimated_times(results: list[Result], cost_model) -> tuple[float, float]:
    """Seconds the cost model predicts for these requests decoded plainly and as they were."""
    plain = spec = 0.0
    for r in results:
        if r.error is not None or r.target_forwards == 0:
            continue
        kv = r.prompt_tokens + r.output_tokens / 2  # the mean context: step cost is linear in it
        plain += r.output_tokens * cost_model.predict(1, 1, kv)
        spec += r.target_forwards * cost_model.predict(1, 1 + r.drafted / r.target_forwards, kv)
    return plain, spec


def summarize(results: list[Result], failed: int, seconds: float, lm, drafter: str, dtype: str,
              plain: list[Result] | None = None, plain_seconds: float = 0.0) -> dict:
    ok = [r for r in results if r.error is None]
    tokens = sum(r.output_tokens for r in ok)
    forwards = sum(r.target_forwards for r in ok)
    lat = sorted(r.latency_s for r in ok)
    s = {
        "model": lm.model_name, "drafter": drafter, "device": lm.device, "dtype": dtype,
        "requests": len(ok), "failed": failed, "output_tokens": tokens, "target_forwards": forwards,
        "tau": tokens / max(1, forwards), "tokens_per_s": tokens / max(seconds, 1e-9), "wall_s": seconds,
        "latency_p50_s": lat[len(lat) // 2] if lat else 0.0,
        "latency_p99_s": lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else 0.0,
        "speedup_est": lm.estimated_speedup(ok),
        "plain_wall_s": None, "plain_tokens_per_s": None, "speedup_measured": None,
        "outputs_identical": None, "outputs_compared": None,
        # steps redone smaller after running out of GPU memory; None where nothing counts them
        "oom_retries": lm.oom_retries,
    }
    if plain is not None:
        by_id = {r.id: r for r in plain if r.error is None}
        pairs = [(by_id[r.id], r) for r in ok if r.id in by_id]
        plain_tokens = sum(p.output_tokens for p in by_id.values())
        s.update(plain_wall_s=plain_seconds, plain_tokens_per_s=plain_tokens / max(plain_seconds, 1e-9),
                 speedup_measured=plain_seconds / max(seconds, 1e-9),
                 outputs_identical=sum(p.token_ids == r.token_ids for p, r in pairs), outputs_compared=len(pairs))
    return s


def print_summary(console: Console, s: dict, shown: list[Result]) -> None:
    for r in shown:
        console.print(f"[bold]{r.id}[/bold] ({r.output_tokens} tokens, τ {r.tau:.2f}):")
        console.print(r.text if r.error is None else f"[red]error: {r.error}[/red]", markup=False, highlight=False)
    # One row per number: it stays readable in a narrow terminal.
    table = Table(title=f"lookahead run · {s['model']} · drafter {s['drafter']} · {s['device']} {s['dtype']}",
                  show_header=False)
    table.add_column("")
    table.add_column("", justify="right")
    est = s["speedup_est"]
    rows = [("requests", str(s["requests"])), ("failed", str(s["failed"])), ("output tokens", str(s["output_tokens"])),
            ("τ (tokens per target forward)", f"{s['tau']:.2f}"), ("tokens/s", f"{s['tokens_per_s']:.1f}"),
            ("wall s", f"{s['wall_s']:.1f}"),
            ("speedup over plain decoding (estimated)", "–" if est is None else f"{est:.2f}×")]
    if s.get("oom_retries"):  # a row only when memory ran out: it is a warning, not a figure of every run
        rows.append(("out-of-memory retries (step redone smaller)", str(s["oom_retries"])))
    if s["speedup_measured"] is not None:
        rows += [("speedup over plain decoding (measured)", f"{s['speedup_measured']:.2f}×"),
                 ("outputs identical to plain decoding", f"{s['outputs_identical']}/{s['outputs_compared']}")]
    if "fleet" in s:
        f = s["fleet"]
        rows += [("Ray workers (deaths, requests requeued)",
                  f"{f['workers']} ({f['worker_deaths']}, {f['requests_requeued']})"),
                 ("fleet outputs shared (object-store chunks)", str(f["fleet_chunks"]))]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
