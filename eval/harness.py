"""Regenerate every table and plot of eval/RESULTS.md on this machine, in one command.

  python -m lookahead.eval --quick          # a few minutes on a 2-core CPU: small sizes, same tables
  python -m lookahead.eval                  # the commands RESULTS.md cites (the GPU rows need a GPU)
  python -m lookahead.eval --only replay    # some benchmarks, by name (--help lists them)

Each benchmark is a module with its own `main(argv)` printing markdown; the harness
runs them in turn with the argv of the chosen mode, captures what each prints into
OUT/<name>.md (plots beside them) and writes OUT/index.md naming the machine, the date
and the exact command of every table. In full mode every command is one that README.md or
eval/RESULTS.md cites for the figures it quotes, output files aside (tests/test_harness.py
holds the two to each other).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import importlib.util
import io
import platform
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

TRACES = Path(__file__).resolve().parent / "traces"  # the replay's recorded traces
LOAD_TRACES = Path(__file__).resolve().parent / "results" / "traces"  # the load simulator's
SEPARATOR = re.compile(r"\|(\s*:?-+:?\s*\|)+")  # a markdown table's line under its header


@dataclass
class Bench:
    name: str  # output file stem, and the name --only takes
    module: str  # lookahead.eval.<module>, which has main(argv)
    about: str  # what it measures, for --help
    quick: list[str]  # argv in --quick mode
    full: list[str]  # argv in full mode
    needs_gpu: bool = False
    needs_module: str | None = None  # an optional extra's module ("ray"): skipped, with a note, without it


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def benches(out: Path) -> list[Bench]:
    gec, rag = str(TRACES / "gec-smollm2-128.jsonl"), str(TRACES / "rag-smollm2-128.jsonl")
    sim = [str(LOAD_TRACES / "gec.jsonl"), str(LOAD_TRACES / "rag.jsonl")]
    # SuffixDecoding's rows need the extra `arctic`: without it the replay leaves them out, our drafters' τ unchanged.
    replay = [gec, rag, "--budgets", "16", "64", "--max-depth", "32", "--half", "held-out",
              *([] if installed("arctic_inference")
                                                                      else ["--no-arctic"])]
    systems = ["--systems", "prompt-lookup/fixed", "auto/fixed", "auto/goodput"]
    load = ["--workloads", "gec", "--limit", "3", "--max-new-tokens", "32", "--controllers", "goodput", "fixed-32",
            "off", "--out-dir", str(out)]
    simulated = ["--traces", *sim, "--cost", "h100-8b", "--max-batch-size", "32", "--name", "sim-h100-llama8b",
                 "--out-dir", str(out)]
    return [
        Bench("e2e", "bench_e2e", "end to end on the CPU: Hugging Face greedy and prompt lookup against our engine",
              ["--workloads", "gec", "rag", "--limit", "2", "--max-new-tokens", "48", *systems,
               "--json", str(out / "e2e.json")],
              ["--workloads", "gec", "rag", "--limit", "6", "--max-new-tokens", "128", *systems,
               "--json", str(out / "e2e.json")]),
        Bench("linear-layout", "bench_linear", "the CPU linear layers' time by rows per step",
              ["--rows", "1", "2", "4", "8", "16", "33", "--repeats", "3"], []),
        Bench("replay", "bench_replay", "τ of every drafter on recorded traces, against Hugging Face's chain "
              "and SuffixDecoding", replay, [*replay, "--json", str(out / "replay.json")]),
        Bench("drafter-latency", "bench_drafters", "propose latency of prompt lookup and the suffix automaton",
              ["--contexts", "1000", "32000", "--steps", "200"], []),
        Bench("retrieval", "bench_retrieval", "the retrieval datastore's build rate and propose latency",
              ["--tokens", "1000000", "--steps", "300", "--outputs", "30"], []),
        Bench("startup", "bench_startup", "time to the first output line and to exit of `lookahead run` on a warm "
              "cache, and where it goes", ["--runs", "3"], ["--runs", "5", "--json", str(out / "startup.json")]),
        Bench("load", "load_bench", "the real engine under Poisson arrivals, per controller", load, load),
        Bench("load-simulated", "simulator", "the engine under load on an H100 cost curve, simulated on traces",
              [*simulated, "--requests", "40"], [*simulated, "--requests", "200"]),
        *(Bench(f"fleet-{w}", "bench_fleet", f"a local Ray fleet of 1 and 2 workers against one process ({w})",
                ["--workload", w, "--limit", "4", "--max-new-tokens", "24", "--json", str(out / f"fleet-{w}.json")],
                ["--workload", w, "--limit", "16", "--max-new-tokens", "64", "--json", str(out / f"fleet-{w}.json")],
                needs_module="ray") for w in ("gec", "rag")),
        Bench("kernel", "bench_kernel", "the tree-attention kernel's bandwidth against SDPA (a CUDA GPU)",
              ["--batch", "1", "8", "--tree", "1", "64", "--context", "1024", "4096"],
              ["--json", str(out / "kernel.json")], needs_gpu=True),
    ]


def parser() -> argparse.ArgumentParser:
    listed = benches(Path("OUT"))
    width = max(len(b.name) for b in listed) + 2
    ap = argparse.ArgumentParser(
        prog="python -m lookahead.eval", description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="benchmarks:\n" + "\n".join(f"  {b.name:<{width}}{b.about}" for b in listed))
    ap.add_argument("--quick", action="store_true", help="small sizes: a few minutes on a 2-core CPU")
    ap.add_argument("--out", type=Path, default=None, help="folder for the tables [default: eval/results/<date>-<mode>]")
    ap.add_argument("--only", nargs="+", default=None, choices=[b.name for b in listed], metavar="NAME",
                    help="run only these benchmarks (listed below)")
    return ap


def run_bench(bench: Bench, argv: list[str]) -> tuple[str, float]:
    """Run one benchmark in this process; returns what it printed and its wall time."""
    module = importlib.import_module(f"lookahead.eval.{bench.module}")
    buf = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        module.main(argv)
    return buf.getvalue(), time.perf_counter() - start


def table_spans(lines: list[str]) -> list[tuple[int, int]]:
    """[first, end) of each markdown table: a header, its |---| line, then its rows, up to a line that is
    no table row or the next table's header."""
    heads = {n for n in range(len(lines) - 1) if lines[n].startswith("|") and SEPARATOR.fullmatch(lines[n + 1])}
    spans = []
    for first in sorted(heads):
        end = first + 2
        while end < len(lines) and lines[end].startswith("|") and end not in heads:
            end += 1
        spans.append((first, end))
    return spans


def whole_tables(text: str) -> str:
    """What a benchmark printed, each table once: a benchmark may print each part of a table as soon
    as it is measured and the whole table at the end (bench_e2e: a table per workload, then all of
    them); a part, a table whose header and rows a later table has, is left out."""
    lines = text.splitlines()
    spans = table_spans(lines)
    parts = {n for k, (i, j) in enumerate(spans) for n in range(i, j)
             if any(lines[i] == lines[a] and set(lines[i + 2:j]) <= set(lines[a + 2:b]) for a, b in spans[k + 1:])}
    return "\n".join(line for n, line in enumerate(lines) if n not in parts)


def skip_reason(bench: Bench, gpu: bool) -> str | None:
    if bench.needs_gpu and not gpu:
        return "needs a CUDA GPU"
    if bench.needs_module and not installed(bench.needs_module):
        return f"needs `pip install 'lookahead[{bench.needs_module}]'`"
    return None


def section(bench: Bench, argv: list[str], out: Path, gpu: bool) -> list[str]:
    """Run one benchmark (or skip it, saying why) and its lines of the index."""
    command = f"python -m lookahead.eval.{bench.module} {' '.join(argv)}".rstrip()
    skip = skip_reason(bench, gpu)
    if skip:
        return [f"## {bench.name}", "", f"Skipped: {skip} (`{command}`).", ""]
    print(f"running {bench.name}: {command}", file=sys.stderr, flush=True)
    text, seconds = run_bench(bench, argv)
    report = whole_tables(text).strip()
    (out / f"{bench.name}.md").write_text(report + "\n")
    return [f"## {bench.name}", "", f"`{command}` ({seconds:.0f} s)", "", report, ""]


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    import torch

    mode = "quick" if args.quick else "full"
    today = datetime.date.today().isoformat()
    out = args.out or Path("eval/results") / f"{today}-{mode}"
    out.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.is_available()
    machine = f"{platform.node()}, {torch.get_num_threads()} CPU threads" + (
        f", {torch.cuda.get_device_name()}" if gpu else ", no GPU")
    index = [f"# lookahead eval ({mode}), {today}", "", f"Machine: {machine}.", ""]
    for bench in benches(out):
        if not args.only or bench.name in args.only:
            index += section(bench, bench.quick if args.quick else bench.full, out, gpu)
    (out / "index.md").write_text("\n".join(index) + "\n")
    print(f"wrote {out / 'index.md'}", file=sys.stderr)
