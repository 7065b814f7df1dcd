"""Offline replay: τ by hand, τ equal to the engine's, HF's prompt lookup rule, the CLI, and the arctic peer."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import tiny_model
from lookahead.run.cli import app
from lookahead.drafters import TreeBudget, make_drafter
from lookahead.engine import Engine, EngineConfig, SamplingParams
from lookahead.drafters.peers import ArcticSuffixDrafter, HFChainDrafter
from lookahead.replay import ReplayConfig, TraceRecord, TraceError, build_drafter, read_trace, replay

try:
    import arctic_inference.suffix_decoding  # noqa: F401

    HAVE_ARCTIC = True
except ImportError:
    HAVE_ARCTIC = False
needs_arctic = pytest.mark.skipif(not HAVE_ARCTIC, reason="arctic-inference is not installed (extra `arctic`)")


def write_trace(path, records):
    path.write_text("".join(json.dumps({"id": r.id, "prompt_ids": r.prompt_ids, "output_ids": r.output_ids}) + "\n"
                            for r in records))
    return path


# ---- the simulator -------------------------------------------------------------------------------
def test_hf_chain_tau_by_hand():
    # Prefill: 11. Context "... 10 11": the leftmost "10 11" is at 0, its chain 12 13 14 10 11 is cut to
    # depth 4 (5 tokens left, one is the bonus); 12 13 match, 7 is the bonus. Then "13 7" and "7" never
    # occurred before: no draft, 8 and 9 one forward each. 6 tokens, 4 forwards.
    rec = TraceRecord("r", [10, 11, 12, 13, 14, 10], [11, 12, 13, 7, 8, 9])
    report = replay([rec], HFChainDrafter(), ReplayConfig(max_nodes=32, max_depth=16))
    assert (report.output_tokens, report.target_forwards, report.decode_steps) == (6, 4, 3)
    assert report.tau == 1.5
    assert (report.nodes, report.accepted) == (4, 2)


def test_max_new_tokens_truncates_and_none_gives_tau_one():
    rec = TraceRecord("r", [1, 2, 3, 1, 2], [3, 1, 2, 3, 1, 2, 3])
    assert replay([rec], None).tau == 1.0
    short = replay([rec], HFChainDrafter(), ReplayConfig(max_new_tokens=3))
    # prefill 3; depth cap 1 (2 left): the chain "1" is accepted with bonus 2
    assert (short.output_tokens, short.target_forwards) == (3, 2)


def test_empty_tree_when_budget_is_zero_depth():
    rec = TraceRecord("r", [1, 2, 1], [2, 1, 2, 1])
    report = replay([rec], HFChainDrafter(), ReplayConfig(max_depth=0))
    assert report.tau == 1.0 and report.nodes == 0 and len(report.propose_ns) == report.decode_steps


def repetitive_prompts(n, vocab=97, seed=3):
    """Random prompts that repeat a random phrase, so prompt lookup finds matches."""
    g = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        phrase = g.integers(3, vocab, int(g.integers(3, 8))).tolist()
        noise = [g.integers(3, vocab, int(g.integers(0, 6))).tolist() for _ in range(4)]
        out[f"r{i}"] = sum((phrase + x for x in noise), [])
    return out


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("name", ["prompt-lookup", "recycling"])
def test_replay_tau_equals_engine_tau(batch, name):
    model = tiny_model("llama", seed=1)
    prompts = repetitive_prompts(5)
    # "fixed" verifies the whole pruned tree, as replay does; goodput's choices depend on measured step times
    config = EngineConfig(max_nodes=8, max_depth=4, max_batch_size=batch, prefill_chunk=16, controller="fixed")
    engine = Engine(model, drafter=make_drafter(name), config=config)
    engine.record_successors = 8  # what a trace keeps for successor drafters (the runner's --trace-output)
    reqs = engine.run(prompts, SamplingParams(max_new_tokens=40))
    assert all(r.error is None for r in reqs.values())
    tokens = sum(len(r.output_ids) for r in reqs.values())
    forwards = sum(r.forwards for r in reqs.values())
    assert forwards < tokens  # the drafter did accept something: the comparison is not trivial
    # the trace in admission order (the runner writes finish order; see the replay module)
    records = [TraceRecord(rid, r.prompt_ids, r.output_ids, r.successors) for rid, r in reqs.items()]
    assert all(len(r.successors) == len(r.output_ids) for r in records)
    report = replay(records, make_drafter(name),
                    ReplayConfig(max_nodes=8, max_depth=4, max_batch_size=batch, prefill_chunk=16, max_new_tokens=40))
    assert report.tau == tokens / forwards
    assert (report.output_tokens, report.target_forwards) == (tokens, forwards)
    assert report.nodes == sum(r.drafted for r in reqs.values())
    assert report.accepted == sum(r.accepted for r in reqs.values())


# ---- Hugging Face's prompt lookup ------------------------------------------------------------------
def hf_candidates(ids, num_output_tokens=10, max_ngram=2):
    from transformers.generation.candidate_generator import PromptLookupCandidateGenerator

    gen = PromptLookupCandidateGenerator(num_output_tokens=num_output_tokens, max_matching_ngram_size=max_ngram,
                                         max_length=10_000)
    out, _ = gen.get_candidates(torch.tensor([ids]))
    return out[0, len(ids):].tolist()


def our_chain(ids, **kw):
    d = HFChainDrafter(**kw)
    d.start("r", ids)
    [path] = d.propose("r", TreeBudget(64, 64)).paths() or [[]]
    return path


@pytest.mark.parametrize("ids", [
    [1, 2, 3, 4, 1, 2],              # 2-gram match
    [1, 2, 3, 4, 5, 2],              # only the 1-gram "2" matches
    [7, 1, 2, 9, 1, 2, 8, 1, 2],     # leftmost of several matches wins
    [1, 2, 1, 2],                    # overlapping
    [5, 5, 5, 5],                    # runs
    [1, 2, 3],                       # no match
    [4],                             # one token
    [3, 1, 2] + list(range(10, 30)) + [1, 2],  # chain capped at 10
])
def test_hf_chain_matches_transformers_on_hand_cases(ids):
    assert our_chain(ids) == hf_candidates(ids)


def test_hf_chain_matches_transformers_on_random_contexts():
    g = np.random.default_rng(0)
    for _ in range(200):
        ids = g.integers(0, int(g.integers(2, 8)), int(g.integers(1, 40))).tolist()
        n = int(g.integers(1, 4))
        assert our_chain(ids, max_ngram=n, num_output_tokens=5) == hf_candidates(ids, 5, n), ids


# ---- the CLI ------------------------------------------------------------------------------------------
def test_cli_json_last_line(tmp_path):
    trace = write_trace(tmp_path / "t.jsonl", [TraceRecord("a", [10, 11, 12, 13, 14, 10], [11, 12, 13, 7, 8, 9]),
                                               TraceRecord("b", [1, 2, 3], [4, 5])])
    res = CliRunner().invoke(app, ["replay", "--trace", str(trace), "--drafter", "hf-chain", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert {"tau", "mean_nodes", "propose_us_p50", "propose_us_p99"} <= summary.keys()
    assert summary["tau"] == 8 / 6  # "a": 6 tokens in 4 forwards (by hand above); "b": 2 in 2


@pytest.mark.parametrize("content, message", [
    (None, "cannot read trace"),
    ('{"id": "a", "prompt_ids": [1], "output_ids": [2]}\nnot json\n', "t.jsonl:2: not a trace line"),
    ('{"id": "a", "prompt_ids": [], "output_ids": [2]}\n', "t.jsonl:1: not a trace line"),
    ("\n", "has no records"),
])
def test_cli_bad_trace_is_one_line(tmp_path, content, message):
    path = tmp_path / "t.jsonl"
    if content is not None:
        path.write_text(content)
    res = CliRunner().invoke(app, ["replay", "--trace", str(path)])
    assert res.exit_code == 2
    assert res.stderr.count("\n") == 1 and message in res.stderr
    with pytest.raises(TraceError):
        read_trace(path)


def test_cli_unknown_drafter(tmp_path):
    trace = write_trace(tmp_path / "t.jsonl", [TraceRecord("a", [1], [2])])
    res = CliRunner().invoke(app, ["replay", "--trace", str(trace), "--drafter", "nope"])
    assert res.exit_code == 2 and "--drafter must be one of" in res.stderr


def test_arctic_missing_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "arctic_inference", None)
    monkeypatch.setitem(__import__("sys").modules, "arctic_inference.suffix_decoding", None)
    trace = write_trace(tmp_path / "t.jsonl", [TraceRecord("a", [1], [2])])
    res = CliRunner().invoke(app, ["replay", "--trace", str(trace), "--drafter", "arctic-suffix"])
    assert res.exit_code == 2
    assert res.stderr.count("\n") == 1 and "pip install --no-build-isolation" in res.stderr


@pytest.mark.parametrize("name", ["none", "prompt-lookup", "suffix", "retrieval", "source", "recycling", "auto",
                                  "hf-chain"])
def test_every_builtin_drafter_replays(name):
    recs = [TraceRecord(f"r{i}", p, p[3:] + p[:5]) for i, p in enumerate(repetitive_prompts(3).values())]
    report = replay(recs, build_drafter(name), ReplayConfig(max_nodes=16, max_depth=8, max_batch_size=2))
    assert report.output_tokens == sum(len(r.output_ids) for r in recs)
    assert report.tau >= 1.0 and (name != "none" or report.tau == 1.0)


# ---- SuffixDecoding (arctic-inference) ------------------------------------------------------------------
@needs_arctic
@pytest.mark.parametrize("tree", [True, False])
def test_arctic_suffix_drafts_from_prompt_and_past_responses(tree):
    d = ArcticSuffixDrafter(tree=tree)
    d.start("a", [1, 2, 3, 4, 1, 2, 3, 5, 1, 2])
    t = d.propose("a", TreeBudget(8, 8))
    assert t.paths()[0][:1] == [3]
    if not tree:
        assert (t.parents == np.arange(-1, len(t) - 1)).all()
    d.update("a", [3, 9, 9, 9, 7])
    d.stop("a")
    d.start("b", [0, 9, 9])  # "9 9" is known only from a's response (the global tree)
    assert [9] in [p[:1] for p in d.propose("b", TreeBudget(8, 8)).paths()]


@needs_arctic
def test_arctic_scores_are_conditional():
    from arctic_inference.suffix_decoding import SuffixDecodingCache

    prompt = [1, 2, 3, 4, 1, 2, 3, 5, 1, 2, 3, 4, 1, 2, 3]
    cache = SuffixDecodingCache(max_tree_depth=64)
    cache.start_request("x", prompt)
    raw = cache.speculate("x", prompt, max_spec_tokens=8, max_spec_factor=1.0, min_token_prob=0.1,
                          use_tree_spec=True)
    d = ArcticSuffixDrafter(tree=True)
    d.start("x", prompt)
    t = d.propose("x", TreeBudget(8, 64))
    assert t.tokens.tolist() == raw.token_ids
    np.testing.assert_allclose(t.path_probs(), raw.probs, rtol=1e-5)


@needs_arctic
@pytest.mark.parametrize("name", ["arctic-suffix", "arctic-suffix-chain"])
def test_arctic_replays_through_the_cli(tmp_path, name):
    recs = [TraceRecord(f"r{i}", p, p[3:] + p[:5]) for i, p in enumerate(repetitive_prompts(3).values())]
    trace = write_trace(tmp_path / "t.jsonl", recs)
    res = CliRunner().invoke(app, ["replay", "--trace", str(trace), "--drafter", name, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["tau"] > 1.0
