"""Offline replay: the engine decoding recorded greedy outputs, with no model.

`lookahead run --trace-output trace.jsonl` records {id, prompt_ids, output_ids} per
request. `replay` runs the real `Engine` on a `RecordedTarget` (recorded_target.py), whose
choice at every position is the recorded token: admission, prefill chunks, drafters,
pruning, acceptance, truncation and drafter updates are the engine's own, so replay τ is the
engine's τ by construction. With `--controller fixed` that is the τ of the model that made
the trace (the goodput controller's cuts depend on measured step times, which differ
without the model). The engine admits requests in input order while the runner writes the
trace in finish order: the two agree with `--max-batch-size 1`, and order does not matter
for drafters without shared state (hf-chain).

Example: the recorded output is 5 6 7 8; a chain drafter always guesses 6 7 9.
Prefill gives 5; 3 tokens are left, one of them the bonus, so the chain is cut to
depth 2: 6 7 are accepted and 8 is the bonus. 4 tokens in 2 forwards.

>>> class Guess(HFChainDrafter):
...     def propose(self, request_id, budget):
...         return DraftTree.chain([6, 7, 9]).prune(budget)
>>> rec = TraceRecord("r", [1, 2], [5, 6, 7, 8])
>>> report = replay([rec], Guess(), ReplayConfig(max_nodes=8, max_depth=8))
>>> report.tau, report.mean_nodes, report.mean_accepted
(2.0, 2.0, 2.0)
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lookahead.drafters import Drafter, DraftTree
from lookahead.drafters.peers import ArcticSuffixDrafter, HFChainDrafter

from lookahead.engine import Engine, EngineConfig, SamplingParams
from lookahead.engine.recorded_target import RecordedTarget



class TraceError(ValueError):
    """A trace file that cannot be replayed (user-facing: one line, no traceback)."""


@dataclass
class TraceRecord:
    id: str
    prompt_ids: list[int]  # [P] the prompt as the target saw it, P >= 1
    output_ids: list[int]  # [O] the recorded greedy output
    successors: list[list[int]] | None = None  # [O][k] the target's likeliest tokens at each output position


@dataclass
class ReplayConfig:
    """The engine settings that shape drafting: EngineConfig's, less what a replay has no use for."""

    max_nodes: int = EngineConfig.max_nodes
    max_depth: int = EngineConfig.max_depth
    max_batch_size: int = EngineConfig.max_batch_size
    prefill_chunk: int = EngineConfig.prefill_chunk
    controller: str = "fixed"  # the whole budget (goodput prices steps on the replay's own time)
    max_new_tokens: int | None = None  # the run's limit; None = the longest recorded output


@dataclass
class ReplayReport:
    requests: int
    output_tokens: int
    target_forwards: int  # forwards that produced tokens, prefill included (as the engine counts)
    decode_steps: int  # request-forwards that verified a proposal (possibly empty)
    nodes: int  # draft nodes verified, all steps
    accepted: int  # draft nodes accepted, all steps
    propose_ns: list[int] = field(repr=False, default_factory=list)  # [decode_steps] drafting time per request

    @property
    def tau(self) -> float:
        return self.output_tokens / max(1, self.target_forwards)

    @property
    def mean_nodes(self) -> float:
        return self.nodes / max(1, self.decode_steps)

    @property
    def mean_accepted(self) -> float:
        return self.accepted / max(1, self.decode_steps)

    def propose_us(self, q: float) -> float:
        return float(np.percentile(self.propose_ns, q)) / 1e3 if self.propose_ns else 0.0

    def summary(self) -> dict:
        return {"requests": self.requests, "output_tokens": self.output_tokens,
                "target_forwards": self.target_forwards, "tau": self.tau, "mean_nodes": self.mean_nodes,
                "mean_accepted": self.mean_accepted, "propose_us_p50": self.propose_us(50),
                "propose_us_p99": self.propose_us(99)}


def read_trace(path: str | Path) -> list[TraceRecord]:
    """The records of a trace JSONL file; raises TraceError naming the file and line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise TraceError(f"cannot read trace {path}: {getattr(e, 'strerror', None) or e}") from None
    records = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            obj = None
        if not (isinstance(obj, dict) and _ids(obj.get("prompt_ids")) and _ids(obj.get("output_ids"))
                and obj["prompt_ids"] and "id" in obj):
            raise TraceError(f"{path}:{i}: not a trace line (expected a JSON object with id, "
                             f"a non-empty prompt_ids and output_ids lists of token ids)")
        succ = obj.get("successors")
        if succ is not None and not (isinstance(succ, list) and len(succ) == len(obj["output_ids"])
                                     and all(_ids(row) and row for row in succ)):
            raise TraceError(f"{path}:{i}: \"successors\" must hold one non-empty list of token ids per output token")
        records.append(TraceRecord(str(obj["id"]), obj["prompt_ids"], obj["output_ids"], succ))
    if not records:
        raise TraceError(f"trace {path} has no records")
    return records


def _ids(value) -> bool:
    return isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value)


def replay(records: list[TraceRecord], drafter: Drafter | None, config: ReplayConfig | None = None) -> ReplayReport:
    """Decode every record against its recorded output through the engine."""
    config = config or ReplayConfig()
    limit = config.max_new_tokens or max(1, max(len(r.output_ids) for r in records))
    usable = [r for r in records if r.output_ids]  # an empty recording decodes nothing
    report = ReplayReport(len(records), 0, 0, 0, 0, 0)
    if not usable:
        return report
    engine = replay_engine(usable, drafter, config, limit)
    requests = [engine.add(r.id, r.prompt_ids, SamplingParams(max_new_tokens=min(limit, len(r.output_ids))))
                for r in usable]
    while engine.has_work():
        engine.step()
    for req in requests:
        report.output_tokens += len(req.output_ids)
        report.target_forwards += req.forwards
        report.decode_steps += req.forwards - 1  # the first token comes from the prompt's forward
        report.nodes += req.drafted
        report.accepted += req.accepted
    # Drafting time per request, from the steps in which every request decoded.
    decode = [st for st in engine.step_log if st.query_tokens - st.draft_nodes == st.requests]
    report.propose_ns = [int(st.propose_seconds * 1e9 / st.requests) for st in decode for _ in range(st.requests)]
    return report


def replay_engine(records: list[TraceRecord], drafter: Drafter | None, config: ReplayConfig, limit: int,
                  target: RecordedTarget | None = None, clock=None) -> Engine:
    """An engine over a RecordedTarget of `records` (or `target`) with room for all of them at once;
    `clock`: the engine's clock (default: real time)."""
    target = target or RecordedTarget({r.id: r.prompt_ids + r.output_ids for r in records},
                                      successors={r.id: r.successors for r in records if r.successors})
    room = sum(len(r.prompt_ids) + limit + config.max_depth + 1 for r in records)
    engine_config = EngineConfig(max_nodes=config.max_nodes, max_depth=config.max_depth, controller=config.controller,
                                 max_batch_size=config.max_batch_size, prefill_chunk=config.prefill_chunk,
                                 kv_cache_tokens=room + EngineConfig.block_size * len(records))
    return Engine(target, drafter=drafter, config=engine_config, eos_token_ids=[],
                  **({} if clock is None else {"clock": clock}))


def build_drafter(name: str, corpus: list[str] | None = None, tokenize=None) -> Drafter | None:
    """A drafter by CLI name: make_drafter's names, hf-chain, arctic-suffix, arctic-suffix-chain.

    corpus/tokenize: retrieval documents and the tokenizer that made the trace's ids
    (as `lookahead run --corpus`); "retrieval" and "auto" without a corpus learn
    from the outputs of earlier requests only, as the runner's drafters do.
    """
    if name == "hf-chain":
        return HFChainDrafter()
    if name in ("arctic-suffix", "arctic-suffix-chain"):
        return ArcticSuffixDrafter(tree=name == "arctic-suffix")
    from lookahead.drafters import RetrievalStore, make_drafter

    store = None
    if corpus:
        store = RetrievalStore.from_files(corpus, tokenize)
    elif name in ("retrieval", "auto"):
        store = RetrievalStore()
    return make_drafter(name, store=store)
