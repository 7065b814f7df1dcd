"""What `lookahead run` does: read requests, decode them as a stream, write each result as it finishes.

Everything the user can get wrong (options, input lines, documents) is checked
before the model loads; a request the engine cannot serve fails alone.

>>> opts = RunOptions(input=Path("questions.txt"), documents=["manual.txt"], output=Path("answers.jsonl"))
>>> # summary = run_requests(opts)    # the dict `lookahead run --json` prints
"""
from __future__ import annotations

import gc
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lookahead.engine.config import EngineConfig, SamplingParams
from lookahead.run.requests_io import InputError, InputLine
from lookahead.run.results_file import finished_ids
from lookahead.run.startup import collector_paused, mark


@dataclass
class RunOptions:
    input: Path | None = None
    workload: str | None = None
    output: Path | None = None
    model: str | None = None
    drafter: str = "auto"
    task: str | None = None  # None: inferred (tasks.infer_task)
    documents: list[str] = field(default_factory=list)
    max_new_tokens: int = SamplingParams.max_new_tokens  # the options' defaults: engine/config.py
    temperature: float = SamplingParams.temperature
    top_p: float = SamplingParams.top_p
    seed: int = SamplingParams.seed
    top_k: int = SamplingParams.top_k
    min_p: float = SamplingParams.min_p
    stop: tuple[str, ...] = ()
    logprobs: int | None = None
    dtype: str = "auto"
    device: str = "auto"
    max_nodes: int = EngineConfig.max_nodes
    max_depth: int = EngineConfig.max_depth
    max_batch_size: int = EngineConfig.max_batch_size
    exact: bool = EngineConfig.exact
    controller: str = EngineConfig.controller
    limit: int | None = None
    corpus: list[str] = field(default_factory=list)
    trace_output: Path | None = None
    resume: bool = False
    on_error: str = "skip"  # skip: record a bad line or failed request and go on; fail: stop at the first
    compare_plain: bool = False
    as_json: bool = False
    in_order: bool = False  # --output in input order (held back until every earlier request is written)
    truncate_prompt: bool = False  # a prompt too long for the context keeps its end
    threads: int | None = None  # CPU threads for torch (None: torch's default)
    ray: str | None = None  # a Ray cluster to share the requests over: "local", "auto" or an address
    workers: int | None = None  # engines on that cluster (None: one per GPU, or per 2 CPU cores)


TRACE_SUCCESSORS = 8  # the target's likeliest tokens a trace keeps per output position (replay's drafters use <= 8)


class RunError(ValueError):
    """A run stopped by --on-error fail (one line for the user)."""


def load_lines(opts: RunOptions, task: str, documents: list[str]) -> list[InputLine]:
    """The input lines, each request shaped by the task; bad lines kept with their error."""
    from lookahead.run.requests_io import read_requests
    from lookahead.samples import bundled_path
    from lookahead.run.tasks import shape

    path = opts.input if opts.input is not None else bundled_path(opts.workload)
    lines = read_requests(path)
    lines = lines[: opts.limit] if opts.limit else lines
    for line in lines:
        if line.spec is not None:
            try:
                line.spec = shape(line.spec, task, documents)
            except InputError as e:
                line.spec, line.error = None, f"line {line.lineno}: {e}"
        if line.error is not None and opts.on_error == "fail":
            raise RunError(line.error)
    return lines


def run_requests(opts: RunOptions) -> dict:
    try:
        with collector_paused():  # the imports and the model load, without the garbage collector's sweeps
            started = start_engine(opts)
        if isinstance(started, dict):  # nothing left to run
            return started
        lm, lines, task, console = started
        if opts.trace_output and opts.ray is None:  # the trace carries what successor drafters learn from
            lm.engine.record_successors = TRACE_SUCCESSORS
        try:
            return decode_requests(opts, lm, lines, task, console)
        finally:
            if opts.ray is not None:
                lm.close()
    finally:
        gc.unfreeze()  # collectable again for a caller that goes on: the engine's objects form cycles


def start_engine(opts: RunOptions):
    """Check the inputs, then load the engine: (engine, lines, task, console), or the summary of a
    --resume with nothing left to run."""
    from lookahead.drafters.corpus import read_documents

    from lookahead.run.documents import read_document_files
    from lookahead.run.tasks import infer_task

    if opts.ray is not None:  # a missing extra or a dead address is said before anything loads
        from lookahead.fleet.cluster import check_address, import_ray

        import_ray()
        check_address(opts.ray)
    read_documents(opts.corpus)  # a bad corpus file fails now, not after a long model load
    documents = read_document_files(opts.documents)
    task = infer_task(opts.task, opts.workload, documents)
    lines = load_lines(opts, task, documents)

    console = Console(stderr=True)
    if opts.resume and {line_id(ln) for ln in lines} <= finished_ids(opts.output):
        console.print(f"nothing left to run: every request is finished in {opts.output}", highlight=False)
        return {"requests": 0, "failed": 0, "failures": [], "resumed": len(lines), "task": task}
    # torch and transformers only once the input is known to be good
    mark("inputs")
    import torch

    mark("torch")
    from transformers.utils import logging as hf_logging

    mark("transformers")
    if opts.threads is not None:
        torch.set_num_threads(opts.threads)
    # The datastore also gets each request's own documents: a request may draft from another's.
    store_docs = list(dict.fromkeys(documents + [d for ln in lines if ln.spec for d in ln.spec.documents]))
    hf_logging.disable_progress_bar()  # our own status line says what loads; an error stays one line
    config = EngineConfig(max_nodes=opts.max_nodes, max_depth=opts.max_depth, max_batch_size=opts.max_batch_size,
                          controller=opts.controller, exact=opts.exact)
    with console.status("loading model" if opts.ray is None else "starting the Ray workers"):
        lm = open_engine(opts, config, task, store_docs)
    mark("engine")
    return lm, lines, task, console


def decode_requests(opts: RunOptions, lm, lines: list[InputLine], task: str, console: Console) -> dict:
    """Decode the lines not yet in the output (--resume), writing each result as it finishes; the summary.

    With --output the results go to that file; without it, to stdout in input order: their texts, or
    with --json their result lines. Progress and the summary go to stderr (`console`).
    """
    from lookahead.run.report import print_summary, summarize
    from lookahead.run.requests_io import error_line, result_line
    from lookahead.run.results_file import InOrder, ResultsFile

    out = ResultsFile(opts.output, opts.resume) if opts.output else None
    done = out.done if out is not None else set()
    trace = ResultsFile(opts.trace_output, opts.resume, keep=done) if opts.trace_output else None
    todo = [ln for ln in lines if line_id(ln) not in done]
    specs = {ln.spec.id: ln.spec for ln in todo if ln.spec is not None}
    if out is not None:
        record = InOrder([line_id(ln) for ln in todo], out.write) if opts.in_order else None
        emit = record.put if record is not None else lambda rid, row: out.write(row)
    else:
        emit = InOrder([line_id(ln) for ln in todo], stdout_writer(opts.as_json, len(todo) > 1)).put
    sampling = dict(max_new_tokens=opts.max_new_tokens, temperature=opts.temperature, top_p=opts.top_p,
                    seed=opts.seed, top_k=opts.top_k, min_p=opts.min_p, stop=opts.stop, logprobs=opts.logprobs)
    results, failures = [], []
    plain, plain_seconds = None, 0.0
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("{task.fields[rate]}"), console=console,
                        transient=True)  # the table says how it went; an error stays one line
    try:
        with progress:
            if opts.compare_plain:
                plain, plain_seconds = decode_plain(lm, list(specs.values()), sampling, progress, opts)
            bar = progress.add_task("decoding", total=len(todo), rate="")
            start = time.perf_counter()
            for ln in todo:
                if ln.spec is None:  # a bad line is recorded in the output, the others still run
                    failures.append((line_id(ln), ln.error))
                    emit(line_id(ln), error_line(line_id(ln), ln))
                    progress.advance(bar)
            for res in lm.results(list(specs.values()), truncate_prompt=opts.truncate_prompt, **sampling):
                mark("result")
                if res.error is not None and opts.on_error == "fail":
                    named = res.error.startswith(f"request {res.id}")  # the engine's own errors name it
                    raise RunError(res.error if named else f"request {res.id}: {res.error}")
                if res.error is not None:
                    failures.append((res.id, res.error))
                results.append(res)
                if res.error is None:  # trace first: a kill between the two writes leaves no traced orphan
                    write(trace, {"id": res.id, "prompt_ids": res.prompt_ids, "output_ids": res.token_ids,
                                  "successors": res.successors})
                emit(res.id, result_line(specs[res.id], res.to_dict()))
                tokens = sum(r.output_tokens for r in results)
                progress.update(bar, advance=1, rate=f"{tokens / (time.perf_counter() - start):.1f} tok/s")
            seconds = time.perf_counter() - start
        summary = summarize(results, failures, seconds, lm, opts.drafter,
                            lm.dtype + ("" if opts.exact else " (not exact)"), plain, plain_seconds)
        if opts.ray is not None:
            summary["fleet"] = lm.summary()
    finally:
        for f in (out, trace):
            if f is not None:
                f.close()
    summary["task"], summary["resumed"] = task, len(lines) - len(todo)
    if not opts.as_json:
        print_summary(console, summary)
    return summary


def stdout_writer(as_json: bool, several: bool):
    """What a result line shows on stdout: the line itself (--json), or its text (under `==> id <==`
    when there are several); a failed request shows nothing there (the summary names it)."""
    def show(row: dict) -> None:
        if as_json:
            print(json.dumps(row, ensure_ascii=False), flush=True)
            mark("line")
        elif not row.get("error"):
            text = row["text"] if "text" in row else row["response"]["body"]["choices"][0]["message"]["content"]
            print(f"==> {row['id']} <==\n{text}\n" if several else text, flush=True)
            mark("line")
    return show


def open_engine(opts: RunOptions, config, task: str, documents: list[str]):
    """A `Lookahead` in this process, or a `Fleet` of them on the Ray cluster of --ray."""
    kw = dict(drafter=opts.drafter, dtype=opts.dtype, device=opts.device, config=config, corpus=opts.corpus,
              task=task, documents=documents)
    if opts.ray is None:
        from lookahead.api import Lookahead

        return Lookahead(opts.model, **kw)
    from lookahead.fleet.driver import Fleet

    return Fleet(opts.model, address=opts.ray, workers=opts.workers, **kw)


def decode_plain(lm, specs: list, sampling: dict, progress: Progress, opts: RunOptions):
    """The same requests with no drafter, for --compare-plain: (results, seconds)."""
    bar = progress.add_task("plain decoding", total=len(specs), rate="")
    start = time.perf_counter()
    results = []
    for res in lm.results(specs, speculate=False, truncate_prompt=opts.truncate_prompt, **sampling):
        results.append(res)
        progress.advance(bar)
    return results, time.perf_counter() - start


def line_id(line: InputLine) -> str:
    """A line's request id; a bad line's own id where it gave one, else invalid-<line number>."""
    if line.spec is not None:
        return line.spec.id
    return line.id or f"invalid-{line.lineno}"


def write(f, obj: dict) -> None:
    if f is not None:
        f.write(obj)
