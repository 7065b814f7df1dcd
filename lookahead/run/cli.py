"""`lookahead` command line: thin over the library; heavy imports wait until a command runs."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from lookahead.engine.config import (DEVICES, DRAFTERS, DTYPES, ENGINE_RANGES, MAX_STOP_STRINGS, PEER_DRAFTERS, TASKS,
                                     EngineConfig, OptionError, SamplingParams)
from lookahead.run.startup import mark
from lookahead.samples import WORKLOADS

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Model-free speculative decoding: draft token trees from text already there, verify in one pass.")

ENGINE, SAMPLING = EngineConfig(), SamplingParams()  # the options' defaults, defined once (engine/config.py)


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def check_choice(value: str, choices: tuple[str, ...], option: str) -> None:
    if value not in choices:
        fail(f"{option} must be one of {', '.join(choices)}; got {value!r}")


def check_options(engine: dict, sampling: dict | None) -> None:
    """The options' own ranges and types (engine/config.py), reported by their flags."""
    try:
        EngineConfig(**engine)
        if sampling is not None:
            SamplingParams(**sampling)
    except OptionError as e:
        fail(f"--{e.field.replace('_', '-')} {e.rule}")


@app.callback()
def main() -> None:
    """lookahead: several times faster generation for outputs that repeat their inputs."""


@app.command()
def run(
    input: Optional[Path] = typer.Option(
        None, "--input", "-i", show_default="none: give --workload",
        help="Requests: JSONL (id + messages, prompt or text) or a .txt file, one request per line."),
    workload: Optional[str] = typer.Option(None, show_default="none: give --input",
                                           help="A bundled sample instead of --input: rag, gec or gec-ua."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", show_default="none: texts go to the terminal",
                                          help="Results JSONL, one line per request as it finishes."),
    resume: bool = typer.Option(False, "--resume", show_default="off",
                                help="Keep the finished requests already in --output, run the others and append "
                                     "(after Ctrl-C or a crash)."),
    overwrite: bool = typer.Option(False, "--overwrite", show_default="off",
                                   help="Replace an existing --output (without it or --resume, an existing file "
                                        "is refused)."),
    in_order: bool = typer.Option(False, "--in-order", show_default="off: as they finish",
                                  help="Write --output in input order (each line once every earlier one is done)."),
    on_error: str = typer.Option("skip", help="skip: record a bad input line or failed request in the output "
                                 "and go on; fail: stop at the first one (exit 2)."),
    task: Optional[str] = typer.Option(
        None, show_default="gec for the gec workloads, rag with --documents or the rag workload, else chat",
        help="chat; gec: each text is corrected (an instruction before it, the text as the source to copy); "
             "rag: documents first, then the question."),
    documents: list[Path] = typer.Option(
        [], show_default="none",
        help="Documents for every request (repeatable): a text file is one document, a JSONL line with "
             "\"document\" or \"text\" is one, a folder is its files. They go into the prompt and the "
             "retrieval datastore."),
    model: Optional[str] = typer.Option(None, show_default="bundled SmolLM2-135M-Instruct",
                                        help="Model folder or .gguf file."),
    drafter: str = typer.Option("auto", help=f"Drafter: {', '.join(DRAFTERS)}."),
    max_new_tokens: int = typer.Option(SAMPLING.max_new_tokens, help="Tokens to generate per request at most."),
    temperature: float = typer.Option(SAMPLING.temperature, help="0 = greedy; > 0 samples losslessly."),
    top_p: float = typer.Option(SAMPLING.top_p, help="Nucleus sampling mass (with --temperature > 0)."),
    seed: int = typer.Option(SAMPLING.seed, help="Seed for sampling."),
    top_k: int = typer.Option(SAMPLING.top_k, help="Sample among the k likeliest tokens only (0: all)."),
    min_p: float = typer.Option(SAMPLING.min_p, help="Drop tokens below this fraction of the likeliest one's "
                                "probability (0: none)."),
    stop: list[str] = typer.Option([], show_default="none", help="A string that ends the output, not included "
                                   f"(repeatable, up to {MAX_STOP_STRINGS})."),
    logprobs: Optional[int] = typer.Option(None, show_default="off", help="Report each output token's "
                                           "log-probability and this many alternatives (0-20)."),
    truncate_prompt: bool = typer.Option(False, "--truncate-prompt", show_default="off: such a request fails",
                                         help="A prompt too long for the context keeps its end."),
    threads: Optional[int] = typer.Option(None, min=1, show_default="torch's: one per core",
                                          help="CPU threads; 1 is faster on a machine busy with other work."),
    dtype: str = typer.Option("auto", help="auto (bf16 where the CPU has native bf16, else fp32; bf16 on a GPU), "
                                           "float32, bfloat16 or float16."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    max_nodes: int = typer.Option(ENGINE.max_nodes, help="Draft tree nodes verified per request and step, "
                                  f"{ENGINE_RANGES['max_nodes'].lo} to {ENGINE_RANGES['max_nodes'].hi}."),
    max_depth: int = typer.Option(ENGINE.max_depth, help=f"Deepest draft tree node, {ENGINE_RANGES['max_depth'].lo} "
                                  f"to {ENGINE_RANGES['max_depth'].hi}."),
    max_batch_size: int = typer.Option(ENGINE.max_batch_size, help="Requests decoded together."),
    exact: bool = typer.Option(ENGINE.exact, "--exact/--not-exact",
                               help="--not-exact: a faster CPU path whose speculative output may differ from plain "
                                    "decoding (near-ties, mostly in bf16)."),
    controller: str = typer.Option(ENGINE.controller, help="goodput (verify the nodes worth their cost), fixed (the whole "
                                   "budget) or off (plain decoding)."),
    compare_plain: bool = typer.Option(False, "--compare-plain", show_default="off",
                                       help="First decode the same requests with no drafter: measured speedup and "
                                            "whether the outputs are identical."),
    limit: Optional[int] = typer.Option(None, show_default="all", help="Only the first N requests."),
    corpus: list[Path] = typer.Option([], show_default="none",
                                      help="Text or JSONL files for the retrieval drafter (repeatable)."),
    trace_output: Optional[Path] = typer.Option(None, show_default="none",
                                                help="Write {id, prompt_ids, output_ids} per request for "
                                                     "`lookahead replay`."),
    as_json: bool = typer.Option(False, "--json", show_default="off",
                                 help="Print JSON on stdout: each result line (without --output), then the "
                                      "summary as the last line."),
    ray: Optional[str] = typer.Option(
        None, "--ray", metavar="ADDRESS", show_default="off: one process",
        help="Share the requests over a Ray cluster: local (start one here), auto (join this machine's) or "
             "host:port. Needs 'lookahead\\[ray]' and the model on every node."),
    workers: Optional[int] = typer.Option(None, show_default="one per GPU, or one per 2 CPU cores",
                                          help="Engines to start on the Ray cluster (with --ray)."),
) -> None:
    """Generate for every request and report tokens per target forward (τ), tokens/s and speedup."""
    mark("cli")
    if (input is None) == (workload is None):
        fail("give exactly one of --input FILE or --workload NAME")
    if workload is not None:
        check_choice(workload, WORKLOADS, "--workload")
    check_choice(drafter, DRAFTERS, "--drafter")
    check_choice(dtype, DTYPES, "--dtype")
    check_choice(device, DEVICES, "--device")
    check_choice(on_error, ("skip", "fail"), "--on-error")
    if task is not None:
        check_choice(task, TASKS, "--task")
    check_options(dict(max_nodes=max_nodes, max_depth=max_depth, max_batch_size=max_batch_size, controller=controller),
                  dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed, top_k=top_k,
                       min_p=min_p, stop=tuple(stop), logprobs=logprobs))
    if limit is not None and limit <= 0:
        fail(f"--limit must be > 0, got {limit}")
    if workers is not None and (ray is None or workers <= 0):
        fail("--workers needs --ray ADDRESS" if ray is None else f"--workers must be > 0, got {workers}")
    if resume and output is None:
        fail("--resume needs --output FILE (the file to resume)")
    if resume and overwrite:
        fail("give one of --resume and --overwrite")
    for path in (output, trace_output):
        if path is not None and path.is_file() and path.stat().st_size and not (resume or overwrite):
            fail(f"{path} exists: --resume goes on with it, --overwrite replaces it")
    for path in (output, trace_output):
        if path is not None and not path.parent.is_dir():  # found now, not after the model has loaded
            fail(f"output folder does not exist: {path.parent}")

    from lookahead.run.runner import RunOptions, run_requests

    opts = RunOptions(input=input, workload=workload, output=output, model=model, drafter=drafter, task=task,
                      documents=[str(d) for d in documents],
                      max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed, top_k=top_k,
                      min_p=min_p, stop=tuple(stop), logprobs=logprobs, dtype=dtype,
                      device=device, max_nodes=max_nodes, max_depth=max_depth, max_batch_size=max_batch_size, exact=exact,
                      controller=controller, limit=limit, corpus=[str(c) for c in corpus],
                      trace_output=trace_output, resume=resume, on_error=on_error, compare_plain=compare_plain,
                      as_json=as_json, ray=ray, workers=workers, in_order=in_order, truncate_prompt=truncate_prompt,
                      threads=threads)
    try:
        summary = run_requests(opts)
    except ValueError as e:  # every user-facing error type is a ValueError with a one-line message
        fail(str(e))
    except KeyboardInterrupt:
        typer.echo("interrupted: finished requests are in the output file (--resume goes on)", err=True)
        raise typer.Exit(130)
    if as_json:
        typer.echo(json.dumps(summary))
    if summary["failed"]:
        raise typer.Exit(1)


REPLAY_DRAFTERS = DRAFTERS + PEER_DRAFTERS


@app.command()
def replay(
    trace: Path = typer.Option(..., help="Trace JSONL written by `lookahead run --trace-output`."),
    drafter: str = typer.Option("prompt-lookup", help=f"Drafter: {', '.join(REPLAY_DRAFTERS)}."),
    max_nodes: int = typer.Option(ENGINE.max_nodes, help="Draft tree nodes verified per request and step."),
    max_depth: int = typer.Option(ENGINE.max_depth, help="Deepest draft tree node."),
    max_batch_size: int = typer.Option(ENGINE.max_batch_size,
                                       help="Requests decoded together (as in the run that wrote the trace)."),
    max_new_tokens: Optional[int] = typer.Option(None, help="The run's --max-new-tokens. [default: the longest recorded output]"),
    corpus: list[Path] = typer.Option([], help="Text or JSONL files for the retrieval drafter (repeatable)."),
    model: Optional[str] = typer.Option(None, help="Model whose tokenizer encodes --corpus. [default: bundled SmolLM2]"),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object on the last line."),
) -> None:
    """Replay greedy decoding of a trace with no model: τ, tree size and propose latency of a drafter."""
    check_choice(drafter, REPLAY_DRAFTERS, "--drafter")
    check_options(dict(max_nodes=max_nodes, max_depth=max_depth, max_batch_size=max_batch_size),
                  None if max_new_tokens is None else dict(max_new_tokens=max_new_tokens))

    from lookahead.replay import ReplayConfig, build_drafter, read_trace, replay as run_replay

    try:
        records = read_trace(trace)
        tokenize = _tokenizer(model) if corpus else None
        drafter_obj = build_drafter(drafter, [str(c) for c in corpus], tokenize)
    except (ValueError, ImportError) as e:  # one-line user errors: trace, corpus, model, missing extra
        fail(str(e))
    config = ReplayConfig(max_nodes=max_nodes, max_depth=max_depth, max_batch_size=max_batch_size,
                          max_new_tokens=max_new_tokens)
    summary = {"drafter": drafter, "max_nodes": max_nodes, "max_depth": max_depth,
               **run_replay(records, drafter_obj, config).summary()}
    if as_json:
        typer.echo(json.dumps(summary))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"lookahead replay · {trace.name} · drafter {drafter} · nodes {max_nodes} depth {max_depth}")
    for col in ("requests", "output tokens", "τ (tokens/forward)", "mean nodes", "mean accepted",
                "propose µs p50", "propose µs p99"):
        table.add_column(col, justify="right")
    s = summary
    table.add_row(str(s["requests"]), str(s["output_tokens"]), f"{s['tau']:.3f}", f"{s['mean_nodes']:.1f}",
                  f"{s['mean_accepted']:.2f}", f"{s['propose_us_p50']:.1f}", f"{s['propose_us_p99']:.1f}")
    Console().print(table)


@app.command()
def cache(clear: bool = typer.Option(False, "--clear", help="Delete them (each is made again when next needed).")) -> None:
    """The converted models lookahead keeps (GGUF files de-quantised once to safetensors): list, or --clear."""
    import shutil

    from lookahead.models import cache_dir

    folders = sorted(p for p in (cache_dir() / "models").glob("*") if p.is_dir())
    for p in folders:
        size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        typer.echo(f"{size / 2**20:8.0f} MiB  {p}")
        if clear:
            shutil.rmtree(p)
    typer.echo(f"{'deleted' if clear else 'kept'}: {len(folders)} converted model(s) in {cache_dir() / 'models'}")


@app.command()
def serve(
    model: Optional[str] = typer.Option(None, show_default="bundled SmolLM2-135M-Instruct",
                                        help="Model folder or .gguf file."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, help="Port to listen on (0: any free one)."),
    drafter: str = typer.Option("auto", help=f"Drafter: {', '.join(DRAFTERS)}."),
    dtype: str = typer.Option("auto", help="auto, float32, bfloat16 or float16 (as `lookahead run`)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    max_nodes: int = typer.Option(ENGINE.max_nodes, help="Draft tree nodes verified per request and step."),
    max_depth: int = typer.Option(ENGINE.max_depth, help="Deepest draft tree node."),
    max_batch_size: int = typer.Option(ENGINE.max_batch_size, help="Requests decoded together."),
    controller: str = typer.Option(ENGINE.controller, help="goodput, fixed or off (as `lookahead run`)."),
    exact: bool = typer.Option(ENGINE.exact, "--exact/--not-exact", help="--not-exact: the faster CPU path whose "
                               "speculative output may differ from plain decoding."),
    threads: Optional[int] = typer.Option(None, min=1, show_default="torch's: one per core", help="CPU threads."),
    max_queue: int = typer.Option(64, help="Requests waiting at most; past it a request is answered 503 with "
                                  "Retry-After."),
) -> None:
    """Serve OpenAI's chat and completions API over HTTP, every connection batched into one engine."""
    check_choice(drafter, DRAFTERS, "--drafter")
    check_choice(dtype, DTYPES, "--dtype")
    check_choice(device, DEVICES, "--device")
    engine = dict(max_nodes=max_nodes, max_depth=max_depth, max_batch_size=max_batch_size, controller=controller,
                  exact=exact)
    check_options(engine, None)
    if not 0 <= port <= 65535:
        fail(f"--port must be in [0, 65535], got {port}")
    if max_queue < 1:
        fail(f"--max-queue must be >= 1, got {max_queue}")
    try:
        from lookahead.serve.server import ServeError, ServeOptions, serve as run_server
    except ImportError as e:
        fail(f"lookahead serve needs the serve extra: pip install 'lookahead[serve]' ({e})")
    opts = ServeOptions(model=model, host=host, port=port, drafter=drafter, dtype=dtype, device=device,
                        config=EngineConfig(**engine), threads=threads, max_queue=max_queue)
    try:
        run_server(opts)
    except (ServeError, ValueError) as e:  # a taken port, a bad model: one line
        fail(str(e))


def _tokenizer(model: Optional[str]):
    """text -> ids with the model's tokenizer (no special tokens), as `lookahead run --corpus` encodes."""
    from lookahead.models import load_tokenizer

    tok = load_tokenizer(model)
    return lambda text: tok(text, add_special_tokens=False)["input_ids"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
