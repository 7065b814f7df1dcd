"""End to end, side by side in one process: Hugging Face greedy and prompt lookup against our engine.

Every system decodes the same requests one at a time (Hugging Face prompt lookup
refuses batches), greedy, on the same model object, the systems interleaved request by
request so that the machine's drift favours none:

  hf-greedy   model.generate(do_sample=False), on the model as transformers ships it
  hf-pld      model.generate(prompt_lookup_num_tokens=10)   (τ from counted forwards)
  hf-compiled model.generate(cache_implementation="static"): a static cache, which transformers
              compiles with torch.compile on a GPU (on the CPU it runs uncompiled); only when asked
              for in --systems
  llama.cpp   llama.cpp greedy on the same GGUF and thread count (llama_cpp_peer.py; its own
              quantised kernels, so its output is compared with nothing); skipped with a note
              when the model is not a GGUF or the extra `llamacpp` is not installed
  plain       our engine, no drafter
  <drafter>   our engine with that drafter and controller (e.g. auto/goodput, prompt-lookup/fixed),
              built as `lookahead run --workload` builds it (task, sources, documents)

Reports τ (output tokens per target forward), tokens/s, speedup over hf-greedy and over
our plain decoding, the fraction of outputs identical to the same path's own greedy output
(`baseline`: Hugging Face prompt lookup and static cache against Hugging Face greedy, a ~fast system against
plain~fast, the rest against our plain), and for our engines what a decode step verified
(query tokens: 1 + draft nodes) and took.

  python -m lookahead.eval.bench_e2e --workloads gec rag --limit 8 --max-new-tokens 128
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass

import torch

from lookahead.api import build_drafter
from lookahead.engine import Engine, EngineConfig, SamplingParams
from lookahead.eval import llama_cpp_peer
from lookahead.eval.tables import markdown_table
from lookahead.eval.workloads import load_workload
from lookahead.models import load_model, resolve_model_path
from lookahead.run.requests_io import RequestSpec, encode_prompt


@dataclass
class Row:
    workload: str
    system: str
    requests: int
    output_tokens: int
    forwards: int
    seconds: float
    identical: int | None  # outputs equal to the greedy output of the same path (`baseline`); None: no baseline
    tau: float = 0.0
    tokens_per_s: float = 0.0
    speedup_vs_hf: float = 0.0
    speedup_vs_plain: float = 0.0
    decode_rows: float | None = None  # our engines: mean query tokens of a decode step (1 + draft nodes)
    decode_step_ms: float | None = None  # our engines: mean wall time of a decode step


class ForwardCounter:
    """Counts target forwards of `generate` (prompt lookup verifies a whole chain per call)."""

    def __init__(self, model):
        self.calls = 0
        self.handle = model.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        self.calls += 1


HF_OPTIONS = {"hf-greedy": {}, "hf-pld": {"prompt_lookup_num_tokens": 10},
              "hf-compiled": {"cache_implementation": "static"}}


def hf_generate(model, ids: list[int], n: int, system: str) -> tuple[list[int], int]:
    x = torch.tensor([ids], device=model.device)
    counter = ForwardCounter(model)
    try:
        extra = HF_OPTIONS[system]
        out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False, **extra)
    finally:
        counter.handle.remove()
    return out[0, len(ids):].tolist(), counter.calls


def run_engine(engine: Engine, rid: str, ids, source, n) -> tuple[list[int], int]:
    """One request through the system's engine, alone in it: its output and forwards."""
    req = engine.add(rid, ids, SamplingParams(max_new_tokens=n), source_ids=source)
    while engine.has_work():
        engine.step()
    return req.output_ids, req.forwards


def run_system(system: str, model, rid: str, case: tuple, n, engines: dict) -> tuple[list[int], int]:
    ids, source = case
    if system == "llama.cpp":
        return engines[system].generate(ids, n, engines["plain"].eos)
    if system.startswith("hf-"):  # the model as transformers ships it: its SDPA and its linear layers
        model.set_attn_implementation("sdpa")
        try:
            return hf_generate(model, ids, n, system)
        finally:
            model.set_attn_implementation("lookahead")
    return run_engine(engines[system], rid, ids, source, n)


def baseline(system: str, systems: list[str]) -> str | None:
    """The greedy decoding a system's output should equal: its own path's plain decoding (None: none).

    >>> [baseline(s, ["plain", "hf-greedy", "hf-pld", "plain~fast", "auto/goodput~fast", "llama.cpp"])
    ...  for s in ("hf-pld", "auto/goodput~fast", "auto/goodput", "hf-greedy", "llama.cpp")]
    ['hf-greedy', 'plain~fast', 'plain', 'plain', None]
    """
    if system == "llama.cpp":
        return None
    if system in ("hf-pld", "hf-compiled"):
        return "hf-greedy"
    if system.endswith("~fast") and "plain~fast" in systems:
        return "plain~fast"
    return "plain"


def bench_workload(lm, workload, limit, n, systems, max_nodes, max_depth, llama_cpp=None) -> list[Row]:
    """Every system on every request, interleaved (the order rotating from one request to the next),
    so that a drift of the machine's speed during the run does not favour whichever system runs first.
    llama_cpp: a LlamaCppGreedy to run beside them, or None."""
    model, tok = lm.model, lm.tokenizer
    cases = load_workload(workload, limit=limit)
    # As `lookahead run` encodes them: the chat prompt, and the text a rewriting task copies (its source).
    prompts = {c["id"]: (encode_prompt(tok, RequestSpec(c["id"], messages=c["messages"])),
                         tok(c["source"], add_special_tokens=False)["input_ids"] if c.get("source") else None)
               for c in cases}
    order = ["plain", "hf-greedy", "hf-pld", *(["llama.cpp"] if llama_cpp else []),
             *(s for s in systems if s not in ("plain", "hf-greedy", "hf-pld"))]
    # One engine per system for the whole run, as `lookahead run --workload` builds it: the
    # workload's task (`auto` adds the source-aligned drafter for grammar correction), the
    # requests' documents in the retrieval datastore, and a cost model and calibration that
    # learn from request to request.
    task = "gec" if workload.startswith("gec") else "rag"
    documents = [c["document"] for c in cases if c.get("document")]
    room = max(len(ids) for ids, _ in prompts.values()) + n + max_depth + 64
    engines = {"llama.cpp": llama_cpp} if llama_cpp else {}
    for system in order:
        if not system.startswith("hf-") and system != "llama.cpp":
            base, fast = system.removesuffix("~fast"), system.endswith("~fast")  # ~fast: not exact
            name, controller = ("none", "off") if base == "plain" else base.split("/")
            config = EngineConfig(max_nodes=max_nodes, max_depth=max_depth, max_batch_size=1,
                                  controller=controller, kv_cache_tokens=room, exact=not fast)
            engines[system] = Engine(model, tok, build_drafter(name, tok, None, task, documents), config)
    first = next(iter(prompts.values()))
    for system in order:  # warm-up: the first call of each path pays one-off set-up
        run_system(system, model, "warm-up", first, 4, engines)
    for system in systems_with_steps(engines):
        engines[system].step_log.clear()
    outputs = {s: {} for s in order}
    forwards = dict.fromkeys(order, 0)
    seconds = dict.fromkeys(order, 0.0)
    for k, (rid, case) in enumerate(prompts.items()):
        for system in order[k % len(order):] + order[: k % len(order)]:
            start = time.perf_counter()
            outputs[system][rid], f = run_system(system, model, rid, case, n, engines)
            seconds[system] += time.perf_counter() - start
            forwards[system] += f
    rows = []
    for system in order:
        tokens = sum(len(o) for o in outputs[system].values())
        base = baseline(system, order)
        rows.append(Row(workload, system, len(prompts), tokens, forwards[system], seconds[system],
                        None if base is None else sum(outputs[system][r] == outputs[base][r] for r in prompts),
                        tau=tokens / max(1, forwards[system]), tokens_per_s=tokens / seconds[system]))
    for r in rows:
        if r.system in systems_with_steps(engines):
            decode = [st for st in engines[r.system].step_log if st.query_tokens - st.draft_nodes == st.requests]
            r.decode_rows = sum(st.query_tokens for st in decode) / len(decode)
            r.decode_step_ms = 1000 * sum(st.seconds for st in decode) / len(decode)
    by = {r.system: r for r in rows}
    for r in rows:
        r.speedup_vs_hf = r.tokens_per_s / by["hf-greedy"].tokens_per_s
        r.speedup_vs_plain = r.tokens_per_s / by["plain"].tokens_per_s
    return rows


def systems_with_steps(engines: dict) -> list[str]:
    """Our engines (they log their steps), not the peers."""
    return [s for s in engines if s != "llama.cpp"]


def markdown(rows: list[Row]) -> str:
    return markdown_table(
        ["workload", "system", "requests", "output tokens", "τ", "tokens/s", "× HF greedy", "× our plain",
         "identical to its greedy", "rows / decode step", "decode step ms"],
        [[r.workload, r.system, r.requests, r.output_tokens, f"{r.tau:.2f}", f"{r.tokens_per_s:.1f}",
          f"{r.speedup_vs_hf:.2f}", f"{r.speedup_vs_plain:.2f}", "—" if r.identical is None else f"{r.identical}/{r.requests}",
          "—" if r.decode_rows is None else f"{r.decode_rows:.1f}",
          "—" if r.decode_step_ms is None else f"{r.decode_step_ms:.0f}"] for r in rows])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", nargs="+", default=["gec", "rag"])
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--systems", nargs="+", default=["prompt-lookup/fixed", "auto/fixed", "auto/goodput"],
                    help="DRAFTER/CONTROLLER pairs of our engine; a ~fast suffix (also plain~fast) runs "
                         "the faster path that is not exact (EngineConfig.exact=False)")
    ap.add_argument("--max-nodes", type=int, default=32)
    ap.add_argument("--max-depth", type=int, default=16)
    ap.add_argument("--model", default=None)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", dest="json_out", default=None, help="also write the rows here")
    ap.add_argument("--no-llama-cpp", dest="llama_cpp", action="store_false",
                    help="leave llama.cpp out even where it can run")
    args = ap.parse_args(argv)
    lm = load_model(args.model, dtype=args.dtype, device=args.device)
    peer, note = None, "left out (--no-llama-cpp)"
    if args.llama_cpp:
        gguf = resolve_model_path(args.model)
        note = llama_cpp_peer.unavailable(gguf)
        if note is None:
            peer = llama_cpp_peer.LlamaCppGreedy(gguf, torch.get_num_threads(), n_ctx=4096)
    if note:
        print(f"llama.cpp: skipped: {note}")
    rows = []
    for w in args.workloads:
        rows += bench_workload(lm, w, args.limit, args.max_new_tokens, args.systems, args.max_nodes, args.max_depth,
                               peer)
        print(markdown([r for r in rows if r.workload == w]), file=sys.stderr, flush=True)  # progress
    where = f"{platform.node()} · {lm.device} {lm.dtype} · torch {torch.get_num_threads()} threads"
    print(f"\n{lm.name}, {args.max_new_tokens} new tokens, {where}\n\n{markdown(rows)}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"where": where, "args": vars(args), "rows": [asdict(r) for r in rows]}, f, indent=1)


if __name__ == "__main__":
    main()
