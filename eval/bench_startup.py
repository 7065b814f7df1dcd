"""Start-up of `lookahead run` on a warm cache: the wall time from launch to the first line on stdout
and to exit, median of several runs, with where the time goes.

    python -m lookahead.eval.bench_startup --runs 5
    python -m lookahead.eval.bench_startup --runs 5 --checkouts /tmp/startup-before /tmp/startup-after

Each run launches `lookahead run --workload gec --limit 1 --max-new-tokens 1` (the options below
change the workload, limit and tokens) as a fresh process, after one untimed warm-up run per
command (the converted model, numba's cache and the page cache warm). The first line and the
exit are timed from this side of the pipe. Phases come from the timestamps the CLI writes with
LOOKAHEAD_STARTUP_TRACE=1 (lookahead/run/startup.py; a checkout from before them has none);
imports from one more run under PYTHONPROFILEIMPORTTIME=1 (`python -X importtime`), each
module's own time summed by top-level package (that run is slower: the figures are shares).

--checkouts times other source trees instead of the installed lookahead, in turn run by run: each
a checkout of this repository (a `git worktree` of an older commit), laid out as the installed
package (lookahead/, drafters/, kernels/ and eval/ as lookahead.*) in a temporary folder put
first on PYTHONPATH, run by the same `lookahead` script and the same Python.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from lookahead.eval.tables import markdown_table

PHASES = ("cli", "inputs", "torch", "transformers", "model", "engine", "result", "line")
PHASE_NAMES = {"cli": "Python, typer and the CLI", "inputs": "inputs checked, drafters (numba) imported",
               "torch": "torch imported", "transformers": "transformers' package imported",
               "model": "model code imported, model and tokenizer loaded", "engine": "drafter and engine built",
               "result": "first step (the prefill)", "line": "line written"}
PACKAGES = {"torch": ("torch", "torchgen"), "transformers": ("transformers",), "sympy": ("sympy", "mpmath"),
            "triton": ("triton",), "numba": ("numba", "llvmlite"), "numpy": ("numpy",), "lookahead": ("lookahead",),
            "typer, rich, pydantic": ("typer", "click", "rich", "pydantic", "pydantic_core", "annotated_types")}
IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+\d+ \| (\s*)(\S+)")


@dataclass
class Run:
    first_line: float  # s from launch to the first line on stdout
    exit: float  # s from launch to exit
    load: float  # 1-minute load average just before the launch
    phases: dict[str, float] = field(default_factory=dict)  # phase -> s from launch (its first mark)


def launcher() -> list[str]:
    """The `lookahead` script of this Python's environment (else `python -m lookahead.run.cli`)."""
    script = Path(sys.executable).with_name("lookahead")
    return [str(script)] if script.exists() else [sys.executable, "-m", "lookahead.run.cli"]


def overlay(checkout: Path, root: Path) -> Path:
    """A folder that imports `checkout` as the installed package does (pyproject.toml's package-dir)."""
    pkg = root / checkout.name / "lookahead"
    pkg.mkdir(parents=True)
    for entry in (checkout / "lookahead").iterdir():
        if entry.name != "__pycache__":
            (pkg / entry.name).symlink_to(entry.resolve())
    for folder in ("drafters", "kernels", "eval"):
        (pkg / folder).symlink_to((checkout / folder).resolve())
    return pkg.parent


def environment(path: Path | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPROFILEIMPORTTIME", "LOOKAHEAD_STARTUP_TRACE")}
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(path), *filter(None, [env.get("PYTHONPATH")])])
    return {**env, "LOOKAHEAD_STARTUP_TRACE": "1", **extra}


def launch(command: list[str], env: dict[str, str]) -> tuple[Run, str]:
    """One run: its times, and what it wrote to stderr."""
    load = os.getloadavg()[0]
    start = time.time()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tempfile.gettempdir())
    err: list[bytes] = []
    drain = threading.Thread(target=lambda: err.append(proc.stderr.read()))
    drain.start()
    first = proc.stdout.readline()
    first_line = time.time() - start
    proc.stdout.read()
    proc.wait()
    exit_s = time.time() - start
    drain.join()
    stderr = err[0].decode(errors="replace")
    if proc.returncode != 0 or not first:
        raise RuntimeError(f"{' '.join(command)} failed (exit {proc.returncode}):\n{stderr[-2000:]}")
    phases = {}
    for line in stderr.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "lookahead-startup" and parts[1] not in phases:
            phases[parts[1]] = float(parts[2]) - start
    return Run(first_line, exit_s, load, phases), stderr


def import_seconds(stderr: str) -> dict[str, float]:
    """Seconds of each package group's own import time in a PYTHONPROFILEIMPORTTIME run; the rest as other."""
    group_of = {top: group for group, tops in PACKAGES.items() for top in tops}
    out = dict.fromkeys([*PACKAGES, "other"], 0.0)
    for m in IMPORT_LINE.finditer(stderr):
        out[group_of.get(m.group(3).split(".")[0], "other")] += int(m.group(1)) / 1e6
    return out


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="timed runs per command (after one warm-up)")
    ap.add_argument("--workload", default="gec")
    ap.add_argument("--limit", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=1)
    ap.add_argument("--checkouts", type=Path, nargs="+", default=None,
                    help="source trees to time instead of the installed lookahead (see above)")
    ap.add_argument("--json", type=Path, default=None, help="also write the runs here")
    args = ap.parse_args(argv)
    command = [*launcher(), "run", "--workload", args.workload, "--limit", str(args.limit),
               "--max-new-tokens", str(args.max_new_tokens)]
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        systems = ({"installed": None} if args.checkouts is None else
                   {str(c): overlay(c, Path(tmp) / str(i)) for i, c in enumerate(args.checkouts)})
        runs: dict[str, list[Run]] = {name: [] for name in systems}
        imports = {}
        for name, path in systems.items():
            launch(command, environment(path))  # warm-up: the converted model, numba's cache, the page cache
        for _ in range(args.runs):  # in turn, so that a change of load hits every command alike
            for name, path in systems.items():
                runs[name].append(launch(command, environment(path))[0])
                print(f"{name}: first line {runs[name][-1].first_line:.2f} s, exit {runs[name][-1].exit:.2f} s, "
                      f"load {runs[name][-1].load:.2f}", file=sys.stderr, flush=True)
        for name, path in systems.items():
            imports[name] = import_seconds(launch(command, environment(path, PYTHONPROFILEIMPORTTIME="1"))[1])
    shown = " ".join(["lookahead", *command[len(launcher()):]])
    print(f"`{shown}`, {args.runs} runs per command after a warm-up; {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}\n")
    print(markdown_table(
        ["command", "first line s (median)", "min–max", "exit s (median)", "min–max", "load avg 1 min"],
        [[name, f"{median([r.first_line for r in rs]):.2f}",
          f"{min(r.first_line for r in rs):.2f}–{max(r.first_line for r in rs):.2f}",
          f"{median([r.exit for r in rs]):.2f}", f"{min(r.exit for r in rs):.2f}–{max(r.exit for r in rs):.2f}",
          f"{min(r.load for r in rs):.2f}–{max(r.load for r in rs):.2f}"] for name, rs in runs.items()]))
    for name, rs in runs.items():
        at = {p: median([r.phases[p] for r in rs if p in r.phases]) for p in PHASES if any(p in r.phases for r in rs)}
        if not at:
            continue
        print(f"\nPhases of {name} (median s from launch; LOOKAHEAD_STARTUP_TRACE=1):\n")
        rows, before = [], 0.0
        for p, t in at.items():
            rows.append([p, PHASE_NAMES[p], f"{t:.2f}", f"{t - before:.2f}"])
            before = t
        rows.append(["exit", "summary printed, interpreter shut down", f"{median([r.exit for r in rs]):.2f}",
                     f"{median([r.exit for r in rs]) - before:.2f}"])
        print(markdown_table(["phase", "done", "at s", "took s"], rows))
    print("\nImports, own time by package, s (one run under PYTHONPROFILEIMPORTTIME=1, slower than a timed run):\n")
    print(markdown_table(["package", *imports],
                         [[group, *(f"{imports[n][group]:.2f}" for n in imports)] for group in [*PACKAGES, "other"]]
                         + [["all", *(f"{sum(imports[n].values()):.2f}" for n in imports)]]))
    if args.json:
        args.json.write_text(json.dumps({"command": shown, "runs": {n: [r.__dict__ for r in rs] for n, rs in runs.items()},
                                         "imports": imports}, indent=1))


if __name__ == "__main__":
    main()
