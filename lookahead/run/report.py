"""The numbers `lookahead run` ends with: the summary dict (--json) and the table.

Speedup over plain decoding is reported only when measured: `--compare-plain` first decodes the
same requests with the drafter off, side by side in the same run.
"""
from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lookahead.result import Result


def summarize(results: list[Result], failures: list[tuple[str, str]], seconds: float, lm, drafter: str, dtype: str,
              plain: list[Result] | None = None, plain_seconds: float = 0.0) -> dict:
    """failures: (id, error) of every bad input line and failed request."""
    ok = [r for r in results if r.error is None]
    tokens = sum(r.output_tokens for r in ok)
    forwards = sum(r.target_forwards for r in ok)
    lat = sorted(r.latency_s for r in ok)
    s = {
        "model": lm.model_name, "drafter": drafter, "device": lm.device, "dtype": dtype,
        "requests": len(ok), "failed": len(failures), "failures": [{"id": i, "error": e} for i, e in failures], "output_tokens": tokens, "target_forwards": forwards,
        "tau": tokens / max(1, forwards), "tokens_per_s": tokens / max(seconds, 1e-9), "wall_s": seconds,
        "latency_p50_s": lat[len(lat) // 2] if lat else 0.0,
        "latency_p99_s": lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else 0.0,
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


def print_summary(console: Console, s: dict) -> None:
    """The table, then one line per failure: which request, and why."""
    # One row per number: it stays readable in a narrow terminal.
    table = Table(title=f"lookahead run · {s['model']} · drafter {s['drafter']} · {s['device']} {s['dtype']}",
                  show_header=False)
    table.add_column("")
    table.add_column("", justify="right")
    rows = [("requests", str(s["requests"])), ("failed", str(s["failed"])), ("output tokens", str(s["output_tokens"])),
            ("τ (tokens per target forward)", f"{s['tau']:.2f}"), ("tokens/s", f"{s['tokens_per_s']:.1f}"),
            ("wall s", f"{s['wall_s']:.1f}")]
    if s.get("oom_retries"):  # a row only when memory ran out: it is a warning, not a figure of every run
        rows.append(("out-of-memory retries (step redone smaller)", str(s["oom_retries"])))
    if s["speedup_measured"] is not None:
        rows += [("speedup over plain decoding (measured)", f"{s['speedup_measured']:.2f}×"),
                 ("outputs identical to plain decoding", f"{s['outputs_identical']}/{s['outputs_compared']}")]
    else:
        rows.append(("speedup over plain decoding", "--compare-plain measures it"))
    if "fleet" in s:
        f = s["fleet"]
        rows += [("Ray workers (deaths, requests requeued)",
                  f"{f['workers']} ({f['worker_deaths']}, {f['requests_requeued']})"),
                 ("fleet outputs shared (object-store chunks)", str(f["fleet_chunks"]))]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    for f in s["failures"]:
        console.print(f"[red]failed[/red] {escape(f['id'])}: {escape(f['error'])}", highlight=False, soft_wrap=True)
