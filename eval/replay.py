"""Offline replay: greedy decoding against recorded outputs, with no model.

`lookahead run --trace-output trace.jsonl` records {id, prompt_ids, output_ids} per
request. Greedy output does not depend on the drafts, so the recorded output is
what the target would choose at every position: a drafted path is accepted as far
as it matches the output, plus one bonus token. The loop mirrors
`Engine.step` call for call: admission of up to max_batch_size requests in trace
order (the KV cache is assumed to hold them), prefill chunks, the first token
from prefill with no tree, the depth cap min(max_depth, left - 1), prune after
propose, truncation at max_new_tokens, update with the new tokens, stop at the
end. So drafters whose state is shared across requests (calibration, retrieval,
SuffixDecoding's response tree) see the same history, and replay τ equals the
engine's τ with `--controller fixed` (the goodput controller's cuts depend on
measured step times, which a replay does not have). The engine admits requests in input order while the runner writes
the trace in finish order: the two agree with `--max-batch-size 1`, and order
does not matter for drafters without shared state (hf-chain).

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
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lookahead.drafters import Drafter, DraftTree, TreeBudget

from .peers import ArcticSuffixDrafter, HFChainDrafter

PEER_DRAFTERS = ("hf-chain", "arctic-suffix", "arctic-suffix-chain")


class TraceError(ValueError):
    """A trace file that cannot be replayed (user-facing: one line, no traceback)."""


@dataclass
class TraceRecord:
    id: str
    prompt_ids: list[int]  # [P] the prompt as the target saw it, P >= 1
    output_ids: list[int]  # [O] the recorded greedy output


@dataclass
class ReplayConfig:
    """The engine settings that shape drafting (EngineConfig's names, same defaults)."""

    max_nodes: int = 32  # draft nodes verified per request and step
    max_depth: int = 16  # deepest draft node
    max_batch_size: int = 8  # requests decoded together
    prefill_chunk: int = 1024  # prompt tokens per forward at most
    max_new_tokens: int | None = None  # the run's limit; None = the longest recorded output


@dataclass
class ReplayReport:
    requests: int
    output_tokens: int
    target_forwards: int  # forwards that produced tokens, prefill included (as the engine counts)
    decode_steps: int  # forwards that verified a proposal (possibly empty)
    nodes: int  # draft nodes verified, all steps
    accepted: int  # draft nodes accepted, all steps
    propose_ns: list[int] = field(repr=False, default_factory=list)  # [decode_steps] propose + prune time

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
        records.append(TraceRecord(str(obj["id"]), obj["prompt_ids"], obj["output_ids"]))
    if not records:
        raise TraceError(f"trace {path} has no records")
    return records


def _ids(value) -> bool:
    return isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value)


@dataclass
class _State:
    rec: TraceRecord
    limit: int  # max_new_tokens of the run
    tokens: list[int]  # prompt + output so far
    kv_len: int = 0  # positions the target has seen
    forwards: int = 0

    @property
    def out_len(self) -> int:
        return len(self.tokens) - len(self.rec.prompt_ids)

    @property
    def done(self) -> bool:
        return self.out_len >= min(self.limit, len(self.rec.output_ids))


def replay(records: list[TraceRecord], drafter: Drafter | None, config: ReplayConfig | None = None) -> ReplayReport:
    """Decode every record against its recorded output, mirroring Engine.step."""
    config = config or ReplayConfig()
    limit = config.max_new_tokens or max(1, max(len(r.output_ids) for r in records))
    report = ReplayReport(len(records), 0, 0, 0, 0, 0)
    waiting = deque(r for r in records if r.output_ids)  # an empty recording decodes nothing
    running: list[_State] = []
    while waiting or running:
        while waiting and len(running) < config.max_batch_size:
            rec = waiting.popleft()
            running.append(_State(rec, limit, list(rec.prompt_ids)))
            if drafter is not None:
                drafter.start(rec.id, rec.prompt_ids)
        trees = [_propose(s, drafter, config, report) for s in running]
        for s, tree in zip(running, trees):
            _advance(s, tree, drafter, config, report)
        for s in running:
            if s.done and drafter is not None:
                drafter.stop(s.rec.id)
        running = [s for s in running if not s.done]
    return report


def _propose(s: _State, drafter: Drafter | None, config: ReplayConfig, report: ReplayReport) -> DraftTree | None:
    """The engine's _propose; None marks a prefill step (no proposal)."""
    if len(s.tokens) - s.kv_len > 1:
        return None
    if drafter is None:
        return DraftTree.empty()
    left = s.limit - s.out_len
    budget = TreeBudget(config.max_nodes, max(0, min(config.max_depth, left - 1)))
    t0 = time.perf_counter_ns()
    tree = drafter.propose(s.rec.id, budget).prune(budget)
    report.propose_ns.append(time.perf_counter_ns() - t0)
    return tree


def _advance(s: _State, tree: DraftTree | None, drafter: Drafter | None, config: ReplayConfig,
             report: ReplayReport) -> None:
    """One forward for one request: a prefill chunk, or verify + accept + update."""
    chain = min(len(s.tokens) - s.kv_len, config.prefill_chunk)
    s.kv_len += chain
    if s.kv_len < len(s.tokens):  # a prefill chunk: nothing decided yet
        return
    report.decode_steps += tree is not None
    tree = tree if tree is not None else DraftTree.empty()
    truth = s.rec.output_ids[s.out_len : min(s.limit, len(s.rec.output_ids))]
    nodes = accept_recorded(tree, truth)
    new = truth[: len(nodes) + 1]  # accepted drafts + bonus, cut at the end of the output
    s.kv_len += len(nodes)
    s.tokens += new
    s.forwards += 1
    report.target_forwards += 1
    report.output_tokens += len(new)
    report.nodes += len(tree)
    report.accepted += len(nodes)
    if drafter is not None:
        drafter.update(s.rec.id, new)


def accept_recorded(tree: DraftTree, truth: list[int]) -> list[int]:
    """Accepted nodes: from the root, the first child whose token is the next true token.

    The same walk as the engine's accept_greedy, with the recorded output as the
    target's argmax at each depth; it stops at the end of the recording.
    """
    kids: dict[int, list[int]] = {}
    for i, p in enumerate(tree.parents.tolist()):
        kids.setdefault(p, []).append(i)
    tokens = tree.tokens.tolist()
    nodes, cur = [], -1
    for want in truth:
        nxt = next((c for c in kids.get(cur, ()) if tokens[c] == want), None)
        if nxt is None:
            break
        nodes.append(nxt)
        cur = nxt
    return nodes


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
