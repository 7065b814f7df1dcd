"""Load benchmark and replay simulator: arrivals, controller behaviour under cost curves, a tiny real run."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_model

from lookahead.engine.cost_model import CostCoefficients
from lookahead.drafters.mixer import make_drafter
from lookahead.engine import Engine, EngineConfig, SamplingParams
from lookahead.eval.load_bench import Target, bench_workload, parser
from lookahead.eval.load_report import summarize
from lookahead.eval.load_requests import LoadRequest, poisson_arrivals
from lookahead.engine.recorded_target import RecordedTarget
from lookahead.eval.simulator import SimConfig, capacity, cycled, fit_cost, simulate


def copy_requests(n: int = 6) -> list[LoadRequest]:
    """Rewriting-like requests: the output copies the prompt (drafters find it), with one edit."""
    out = []
    for i in range(n):
        prompt = [(7 * i + 3 * k) % 90 + 5 for k in range(40)]
        output = prompt[:20] + [4] + prompt[20:]
        out.append(LoadRequest(f"r{i}", prompt, output_ids=output))
    return out


def test_poisson_arrivals_have_the_right_mean_and_are_seeded():
    t = poisson_arrivals(20000, rate=4.0, seed=1)
    gaps = np.diff(np.concatenate([[0.0], t]))
    assert abs(gaps.mean() - 0.25) < 0.01
    assert abs(gaps.std() - 0.25) < 0.01  # exponential: std = mean
    assert np.array_equal(t, poisson_arrivals(20000, 4.0, seed=1))
    assert not np.array_equal(t, poisson_arrivals(20000, 4.0, seed=2))


def test_expensive_tokens_mean_no_speculation_and_match_off():
    # Every query token costs the same and nothing else costs: a node of probability p < 1
    # never pays for itself in a decode step. (In a step that also prefills another
    # request the step's average token is dearer than a likely node, and the controller
    # drafts: so the requests here do not overlap.)
    reqs = cycled(copy_requests(), 12)
    cost = CostCoefficients(base=0.0, per_query_token=0.05, past_knee=0.0)
    config = SimConfig(drafter="prompt-lookup", learn=False)
    apart = np.arange(len(reqs)) * 100.0
    good, busy_good = simulate(reqs, apart, cost, "goodput", config)
    off, busy_off = simulate(reqs, apart, cost, "off", config)
    assert sum(t.drafted for t in good) == 0
    assert [(t.arrival, t.finish, t.forwards) for t in good] == [(t.arrival, t.finish, t.forwards) for t in off]
    assert busy_good == busy_off


def test_cheap_tokens_make_goodput_faster_than_off_at_low_load_and_no_request_is_lost():
    reqs = cycled(copy_requests(), 24)
    cost = CostCoefficients(base=0.02, per_query_token=1e-5, past_knee=1e-3, knee=64)
    config = SimConfig(drafter="prompt-lookup")
    cap = capacity(reqs, cost, config)
    for load, factor in ((0.1, 0.5), (2.0, 1.0)):
        arrivals = poisson_arrivals(len(reqs), load * cap, seed=3)
        rows = {c: summarize("copy", c, load, load * cap, *simulate(reqs, arrivals, cost, c, config))
                for c in ("goodput", "off")}
        assert all(r.requests == len(reqs) for r in rows.values())
        assert rows["goodput"].mean_latency_s < factor * rows["off"].mean_latency_s
    timings, _ = simulate(reqs, arrivals, cost, "fixed-8", config)
    assert sorted(t.output_tokens for t in timings) == sorted(len(r.output_ids) for r in reqs)
    assert all(t.finish > t.arrival for t in timings)


def test_fit_cost_recovers_a_curve_from_steps():
    rng = np.random.default_rng(0)
    truth = CostCoefficients(base=0.03, per_request=0.001, per_query_token=2e-4, past_knee=1e-3, knee=64)
    steps = [[r, q, kv, 0, truth.predict(r, q, kv)]
             for r, q, kv in zip(rng.integers(1, 9, 300), rng.integers(1, 400, 300), rng.integers(10, 5000, 300))]
    fit = fit_cost(steps)
    assert fit.knee == 64
    for r, q, kv in ((1, 1, 100), (8, 300, 4000)):
        assert fit.predict(r, q, kv) == pytest.approx(truth.predict(r, q, kv), rel=0.02)


def test_recorded_target_reproduces_the_recording_at_real_forward_cost():
    model = tiny_model()
    reqs = copy_requests(3)
    target = RecordedTarget({r.id: r.prompt_ids + r.output_ids for r in reqs}, eos_id=2, model=model)
    engine = Engine(target, None, make_drafter("prompt-lookup"), EngineConfig(controller="fixed", max_nodes=8),
                    eos_token_ids=[2])
    done = engine.run({r.id: r.prompt_ids for r in reqs}, SamplingParams(max_new_tokens=41))
    for r in reqs:
        assert done[r.id].output_ids == r.output_ids
        assert done[r.id].accepted > 20  # the copy is drafted and accepted, as the recording's model would


def test_load_bench_smoke_on_a_tiny_model():
    args = parser().parse_args(["--rates", "0.5", "2", "--max-new-tokens", "8", "--limit", "3",
                                "--controllers", "goodput", "fixed-8", "off", "--drafter", "prompt-lookup"])
    reqs = copy_requests(3)
    rows, extra = bench_workload(Target(args, tiny_model(), None, "tiny", [2]), "copy", reqs, args)
    assert [(r.load, r.controller) for r in rows] == [(l, c) for l in (0.5, 2) for c in ("goodput", "fixed-8", "off")]
    assert all(r.requests == 3 and r.mean_latency_s > 0 and r.p99_latency_s >= r.mean_latency_s for r in rows)
    assert extra["capacity"] > 0 and all(extra["steps"].values())


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny forwards: a second thread only adds overhead
