"""The eval harness runs the commands README.md and RESULTS.md cite for their figures, refuses a
benchmark it does not have, lists its benchmarks in --help, and writes each table once."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from conftest import tiny_model

from lookahead.eval import harness
from lookahead.eval.harness import Bench, benches, main
from lookahead.eval.load_bench import Target, bench_workload, parser
from lookahead.eval.load_report import RequestTiming, markdown, summarize, with_ratios
from lookahead.eval.load_requests import LoadRequest

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("--json", "--out-dir")  # where a command writes its files: the harness picks its own folder
COMMAND = re.compile(r"python -m lookahead\.eval\.\w+[^`\n#]*")  # up to the end of its code span or line


def cited(doc: str) -> list[list[str]]:
    """Every `python -m lookahead.eval.<module> …` command in a document of the repository (continued lines joined)."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / doc).read_text())
    return [shlex.split(command) for command in COMMAND.findall(text)]


def normalized(command: list[str]) -> tuple:
    """(module, positional arguments, options and their values), paths relative to the repository,
    output options left out: two commands that run the same benchmark on the same inputs are equal."""
    positional, options, option = [], {}, None
    for token in command[3:]:
        token = str(Path(token).relative_to(ROOT)) if token.startswith(str(ROOT)) else token
        if token.startswith("--"):
            option = token
            options[option] = []
        elif option is None:
            positional.append(token)
        else:
            options[option].append(token)
    kept = sorted((o, tuple(v)) for o, v in options.items() if o not in OUTPUTS)
    return command[2], tuple(positional), tuple(kept)


def command(bench: Bench, argv: list[str]) -> list[str]:
    return ["python", "-m", f"lookahead.eval.{bench.module}", *argv]


def replay_bench(out: Path) -> Bench:
    return next(b for b in benches(out) if b.name == "replay")


def readme_replay() -> list[str]:
    (found,) = [c for c in cited("README.md") if c[2] == "lookahead.eval.bench_replay"]
    return found


def test_replay_runs_the_readme_command(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "installed", lambda module: True)  # the extra `arctic` too
    replay = replay_bench(tmp_path)
    assert "--max-depth 32" in " ".join(replay.quick)
    assert normalized(command(replay, replay.quick)) == normalized(command(replay, replay.full)) \
        == normalized(readme_replay())


def test_replay_leaves_suffix_decoding_out_alone_without_its_extra(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "installed", lambda module: False)
    replay = replay_bench(tmp_path)
    assert normalized(command(replay, replay.quick)) == normalized([*readme_replay(), "--no-arctic"])


def test_results_md_cites_the_readme_replay_command():
    assert normalized(readme_replay()) in {normalized(c) for c in cited("eval/RESULTS.md")}


def test_every_full_command_is_one_the_documents_cite(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "installed", lambda module: True)
    documented = {normalized(c) for doc in ("README.md", "eval/RESULTS.md") for c in cited(doc)}
    assert [b.name for b in benches(tmp_path) if normalized(command(b, b.full)) not in documented] == []


def test_an_unknown_benchmark_is_refused_naming_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--only", "replay", "nosuch"])
    assert stop.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "nosuch" in error and all(b.name in error for b in benches(Path("OUT")))


def test_help_lists_every_benchmark(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert all(f"{b.name} {b.about}" in text for b in benches(Path("OUT")))


def test_load_table_has_the_ratios_of_the_json():
    rows = [summarize("gec", controller, load, 1.0, [RequestTiming(0.0, latency, 10, 5, 0)], busy_s=1.0)
            for load in (0.1, 1.5) for controller, latency in (("goodput", 1.0), ("fixed-32", 3.0), ("off", 2.0))]
    table = markdown(rows)
    ratios = [line.split("|")[-2].strip() for line in table.splitlines()[2:]]
    assert ratios == [f"{r.vs_off:.2f}" for r in with_ratios(rows)] == ["0.50", "1.50", "1.00"] * 2
    assert markdown(rows[:1]).splitlines()[-1].endswith("| — |")  # no off row at its load: no ratio


@pytest.mark.usefixtures("one_thread")  # tiny forwards: a second thread only adds overhead
def test_load_bench_prints_its_progress_rows_to_stderr(capsys):
    args = parser().parse_args(["--rates", "0.5", "1", "--max-new-tokens", "4", "--limit", "2", "--controllers", "off"])
    requests = [LoadRequest(f"r{i}", [(5 * i + 3 * k) % 90 + 5 for k in range(24)]) for i in range(2)]
    bench_workload(Target(args, tiny_model(), None, "tiny", [2]), "copy", requests, args)
    captured = capsys.readouterr()
    assert "| copy |" not in captured.out and captured.err.count("| copy |") == 2


@pytest.mark.usefixtures("one_thread")
def test_index_has_each_end_to_end_table_once(tiny_model_dir, tmp_path, monkeypatch):
    argv = ["--model", str(tiny_model_dir), "--workloads", "gec", "rag", "--limit", "1", "--max-new-tokens", "2",
            "--systems", "prompt-lookup/fixed"]
    monkeypatch.setattr(harness, "benches", lambda out: [Bench("e2e", "bench_e2e", "end to end", argv, argv)])
    main(["--quick", "--only", "e2e", "--out", str(tmp_path)])
    index = (tmp_path / "index.md").read_text()
    rows = [line for line in index.splitlines() if line.startswith("| ")]
    assert sum(line.startswith("| workload |") for line in rows) == 1
    assert len(rows) == len(set(rows)) == 1 + 2 * 4  # the header; plain, hf-greedy, hf-pld, ours per workload
    assert (tmp_path / "e2e.md").read_text().strip() in index
