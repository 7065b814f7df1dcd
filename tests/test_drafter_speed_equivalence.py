"""The drafters' trees are pinned: speed work must not change a single proposal.

A slice of the recorded traces is decoded greedily against its recorded output, as the
engine does with one request at a time (propose within the budget, prune, accept the
longest path that agrees with the recording, commit it plus the bonus token), through
`auto` and through each of its members. Every proposed tree (tokens, parents, scores
rounded to 5 decimals) goes into a checksum recorded with the drafters as they were
before the speed work of issue 16, item 4; the τ of each replay is pinned too.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from lookahead.drafters import RetrievalStore, TreeBudget
from lookahead.drafters.mixer import make_drafter
from lookahead.replay import read_trace

TRACES = Path(__file__).resolve().parents[1] / "eval" / "traces"
RECORDS = 12  # per trace: ~2 s for all 20 cases below on a 2-core machine
MAX_DEPTH = 32  # as eval/RESULTS.md §2 (bench_replay --max-depth 32)


def greedy_replay(records, drafter, max_nodes: int, max_depth: int = MAX_DEPTH):
    """(sha256 of every proposed tree, τ) of decoding `records` one after another."""
    digest, tokens, forwards = hashlib.sha256(), 0, 0
    for rec in records:
        out = rec.output_ids
        drafter.start(rec.id, rec.prompt_ids)
        drafter.update(rec.id, out[:1])  # the prompt's forward gives the first token
        n, forwards = 1, forwards + 1
        while n < len(out):
            budget = TreeBudget(max_nodes, max(0, min(max_depth, len(out) - n - 1)))
            tree = drafter.propose(rec.id, budget).prune(budget)
            digest.update(np.asarray(tree.tokens, np.int64).tobytes())
            digest.update(np.asarray(tree.parents, np.int64).tobytes())
            digest.update(np.round(np.asarray(tree.scores, np.float64), 5).tobytes())
            node, accepted = -1, []
            while True:
                hit = np.flatnonzero((tree.parents == node) & (tree.tokens == out[n + len(accepted)]))
                if not len(hit):
                    break
                node = int(hit[0])
                accepted.append(out[n + len(accepted)])
            committed = out[n : n + len(accepted) + 1]  # the accepted drafts and the bonus token
            drafter.update(rec.id, committed)
            n, forwards = n + len(committed), forwards + 1
        tokens += len(out)
        drafter.stop(rec.id)
    return digest.hexdigest()[:16], tokens / forwards


def drafter_for(name: str, trace: str):
    store = RetrievalStore() if name in ("retrieval", "auto") else None
    return make_drafter(name, store=store, task="gec" if trace == "gec" else None)


# (trace, drafter, max_nodes) -> (checksum, τ), recorded at commit 131ae7a's drafters.
PINNED = {
    ("gec", "prompt-lookup", 16): ("c6da3b8029adcd12", 3.73),
    ("gec", "prompt-lookup", 64): ("cbfde043e3d63a03", 4.132963988919667),
    ("gec", "suffix", 16): ("960eb6bfb6589d89", 3.711442786069652),
    ("gec", "suffix", 64): ("e70d0356ffe9834d", 4.0989010989010985),
    ("gec", "retrieval", 16): ("a8d3200e14400a9d", 1.1328777524677296),
    ("gec", "retrieval", 64): ("7946ce5c8bc0ed70", 1.1380625476735318),
    ("gec", "source", 16): ("3573b11d20321fe5", 2.650088809946714),
    ("gec", "source", 64): ("8101993aaa17d732", 2.885880077369439),
    ("gec", "auto", 16): ("85facde1a8c9a763", 4.0989010989010985),
    ("gec", "auto", 64): ("1c490a3a6627f6ed", 4.956810631229236),
    ("rag", "prompt-lookup", 16): ("91f70f64395ba9cb", 4.254847645429363),
    ("rag", "prompt-lookup", 64): ("6c0913f5d814e6cf", 4.876190476190477),
    ("rag", "suffix", 16): ("9da665280e5ee754", 4.140161725067386),
    ("rag", "suffix", 64): ("d1a751a2f9689c6c", 4.530973451327434),
    ("rag", "retrieval", 16): ("d5dd49aba7d08ca7", 1.136094674556213),
    ("rag", "retrieval", 64): ("ab99415cfe33ee6d", 1.1428571428571428),
    ("rag", "source", 16): ("48c3e2f4e47f4c50", 1.5298804780876494),
    ("rag", "source", 64): ("15885f64dd51bba1", 1.6117523609653726),
    ("rag", "auto", 16): ("43c7906c3f5a2f29", 4.254847645429363),
    ("rag", "auto", 64): ("bb1f3e8c97271184", 4.970873786407767),
}


@pytest.mark.parametrize("trace,name,max_nodes", sorted(PINNED))
def test_trees_are_pinned(trace, name, max_nodes):
    records = read_trace(TRACES / f"{trace}-smollm2-128.jsonl")[:RECORDS]
    assert greedy_replay(records, drafter_for(name, trace), max_nodes) == PINNED[trace, name, max_nodes]
