"""Replay τ of every drafter against the peers' rules, on recorded greedy traces (no model).

For each trace and node budget: our drafters (prompt lookup, suffix automaton,
retrieval over past outputs, source-aligned, token recycling, the mixer), Hugging Face's chain
rule (`hf-chain`) and SuffixDecoding (`arctic-suffix`, swept over its settings and shown at its
best). τ counts the prefill forward like the engine does.

Every trace splits into a tuning half and a held-out half by a hash of the request id
(`half_of`): the drafters' constants are chosen on the tuning half; the held-out half is what
the tables report as unseen.

  python -m lookahead.eval.bench_replay eval/traces/gec-smollm2-128.jsonl eval/traces/rag-smollm2-128.jsonl \
      --half held-out
"""
from __future__ import annotations

import argparse
import itertools
import json
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

from lookahead.drafters import RetrievalStore
from lookahead.drafters.mixer import make_drafter
from lookahead.drafters.peers import ArcticSuffixDrafter, HFChainDrafter
from lookahead.replay import ReplayConfig, read_trace, replay
from lookahead.eval.tables import markdown_table

OURS = ("prompt-lookup", "suffix", "retrieval", "source", "recycling", "auto")
HALVES = ("tune", "held-out", "all")


def half_of(request_id: str) -> str:
    """The half a request belongs to, fixed by its id alone (whatever the trace's order or size).

    >>> [half_of(f"gec-00{i}") for i in range(6)]
    ['held-out', 'held-out', 'held-out', 'held-out', 'tune', 'tune']
    """
    return "tune" if zlib.crc32(request_id.encode()) % 2 == 0 else "held-out"
ARCTIC_SWEEP = {"tree": (True, False), "max_spec_factor": (1.0, 2.0, 4.0), "min_token_prob": (0.0, 0.1)}


@dataclass
class Row:
    trace: str
    drafter: str
    max_nodes: int
    tau: float
    mean_nodes: float
    mean_accepted: float
    propose_us_p50: float
    ratio_to_hf_chain: float = 0.0


def task_of(trace: Path) -> str | None:
    return "gec" if trace.name.startswith("gec") else None


def ours(name: str, trace: Path):
    store = RetrievalStore() if name in ("retrieval", "auto") else None
    return make_drafter(name, store=store, task=task_of(trace))


def best_arctic(records, config: ReplayConfig):
    """SuffixDecoding at its best settings for this trace and budget (by τ)."""
    best = None
    for tree, factor, min_prob in itertools.product(*ARCTIC_SWEEP.values()):
        d = ArcticSuffixDrafter(tree=tree, max_spec_factor=factor, min_token_prob=min_prob)
        rep = replay(records, d, config)
        label = f"arctic-suffix ({'tree' if tree else 'chain'}, factor {factor:g}, min p {min_prob:g})"
        if best is None or rep.tau > best[1].tau:
            best = (label, rep)
    return best


def bench(traces: list[Path], budgets: list[int], max_depth: int, with_arctic: bool, half: str = "all") -> list[Row]:
    rows = []
    for trace in traces:
        records = [r for r in read_trace(trace) if half == "all" or half_of(r.id) == half]
        for nodes in budgets:
            config = ReplayConfig(max_nodes=nodes, max_depth=max_depth, max_batch_size=1)
            reports = [("hf-chain", replay(records, HFChainDrafter(), config))]
            if with_arctic:
                reports.append(best_arctic(records, config))
            reports += [(name, replay(records, ours(name, trace), config)) for name in OURS]
            base = reports[0][1].tau
            for name, rep in reports:
                s = rep.summary()
                rows.append(Row(trace.stem if half == "all" else f"{trace.stem} ({half})", name, nodes, s["tau"], s["mean_nodes"], s["mean_accepted"],
                                s["propose_us_p50"], s["tau"] / base))
    return rows


def markdown(rows: list[Row]) -> str:
    return markdown_table(
        ["trace", "nodes", "drafter", "τ", "× hf-chain", "mean nodes", "mean accepted", "propose µs p50"],
        [[r.trace, r.max_nodes, r.drafter, f"{r.tau:.2f}", f"{r.ratio_to_hf_chain:.2f}", f"{r.mean_nodes:.1f}",
          f"{r.mean_accepted:.2f}", f"{r.propose_us_p50:.0f}"] for r in rows])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("traces", nargs="+", type=Path)
    ap.add_argument("--budgets", nargs="+", type=int, default=[16, 64])
    ap.add_argument("--max-depth", type=int, default=16)
    ap.add_argument("--no-arctic", action="store_true", help="skip SuffixDecoding (needs the `arctic` extra)")
    ap.add_argument("--half", choices=HALVES, default="all", help="the requests to replay (see half_of)")
    ap.add_argument("--json", dest="json_out", default=None)
    args = ap.parse_args(argv)
    rows = bench(args.traces, args.budgets, args.max_depth, not args.no_arctic, args.half)
    print(markdown(rows))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps([asdict(r) for r in rows], indent=1))


if __name__ == "__main__":
    main()
