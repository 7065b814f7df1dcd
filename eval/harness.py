"""Regenerate every table and plot of eval/RESULTS.md on this machine, in one command.

  python -m lookahead.eval --quick        # a few minutes on a 2-core CPU: small sizes, same tables
  python -m lookahead.eval                # the sizes RESULTS.md reports (the GPU rows need a GPU)

Each benchmark is a module with its own `main(argv)` printing markdown; the harness
runs them in turn with the sizes of the chosen mode, captures what each prints into
OUT/<name>.md (plots beside them) and writes OUT/index.md naming the machine, the date
and the exact command of every table.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import importlib.util
import io
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

TRACES = Path(__file__).resolve().parent / "traces"


@dataclass
class Bench:
    name: str  # output file stem
    module: str  # lookahead.eval.<module>, which has main(argv)
    quick: list[str]  # argv in --quick mode
    full: list[str]  # argv in full mode
    needs_gpu: bool = False
    needs_module: str | None = None  # an optional extra's module ("ray"): skipped, with a note, without it


def benches(out: Path) -> list[Bench]:
    gec, rag = str(TRACES / "gec-smollm2-128.jsonl"), str(TRACES / "rag-smollm2-128.jsonl")
    return [
        Bench("e2e", "bench_e2e",
              ["--workloads", "gec", "rag", "--limit", "2", "--max-new-tokens", "48", "--json", str(out / "e2e.json")],
              ["--workloads", "gec", "rag", "--limit", "8", "--max-new-tokens", "128", "--json", str(out / "e2e.json")]),
        Bench("linear-layout", "bench_linear", ["--rows", "1", "2", "4", "8", "16", "33", "--repeats", "3"], []),
        Bench("replay", "bench_replay",
              [gec, rag, "--budgets", "16", "64", "--no-arctic"],
              [gec, rag, "--budgets", "16", "64", "--json", str(out / "replay.json")]),
        Bench("drafter-latency", "bench_drafters",
              ["--contexts", "1000", "32000", "--steps", "200"],
              ["--contexts", "1000", "32000", "128000", "--steps", "1000"]),
        Bench("retrieval", "bench_retrieval",
              ["--tokens", "1000000", "--steps", "300", "--outputs", "30"],
              ["--tokens", "10000000"]),
        Bench("load", "load_bench",
              ["--workloads", "gec", "--limit", "3", "--max-new-tokens", "32", "--controllers", "goodput", "fixed-32",
               "off", "--out-dir", str(out)],
              ["--out-dir", str(out)]),
        Bench("load-simulated", "simulator",
              ["--traces", gec, rag, "--requests", "40", "--out-dir", str(out)],
              ["--traces", gec, rag, "--out-dir", str(out)]),
        Bench("fleet", "bench_fleet",
              ["--limit", "4", "--max-new-tokens", "24", "--json", str(out / "fleet.json")],
              ["--limit", "16", "--max-new-tokens", "64", "--json", str(out / "fleet.json")], needs_module="ray"),
        Bench("kernel", "bench_kernel", ["--batch", "1", "8", "--tree", "1", "64", "--context", "1024", "4096"],
              ["--json", str(out / "kernel.json")], needs_gpu=True),
    ]


def run_bench(bench: Bench, argv: list[str]) -> tuple[str, float]:
    """Run one benchmark in this process; returns what it printed and its wall time."""
    module = importlib.import_module(f"lookahead.eval.{bench.module}")
    buf = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        module.main(argv)
    return buf.getvalue(), time.perf_counter() - start


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m lookahead.eval", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a few minutes on a 2-core CPU")
    ap.add_argument("--out", type=Path, default=None, help="folder for the tables [default: eval/results/<date>-<mode>]")
    ap.add_argument("--only", nargs="+", default=None, help="run only these benchmarks (by name)")
    args = ap.parse_args(argv)
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
        if args.only and bench.name not in args.only:
            continue
        argv_b = bench.quick if args.quick else bench.full
        command = f"python -m lookahead.eval.{bench.module} {' '.join(argv_b)}"
        if bench.needs_gpu and not gpu:
            index += [f"## {bench.name}", "", f"Skipped: needs a CUDA GPU (`{command}`).", ""]
            continue
        if bench.needs_module and importlib.util.find_spec(bench.needs_module) is None:
            index += [f"## {bench.name}", "", f"Skipped: needs `pip install 'lookahead[{bench.needs_module}]'` "
                      f"(`{command}`).", ""]
            continue
        print(f"running {bench.name}: {command}", file=sys.stderr, flush=True)
        text, seconds = run_bench(bench, argv_b)
        (out / f"{bench.name}.md").write_text(text)
        index += [f"## {bench.name}", "", f"`{command}` ({seconds:.0f} s)", "", text.strip(), ""]
    (out / "index.md").write_text("\n".join(index) + "\n")
    print(f"wrote {out / 'index.md'}", file=sys.stderr)
