"""Goodput controller and step cost model: the marginal rule, its optimality, and online fitting.

All deterministic: fixed cost models, seeded random trees, and a fake clock that a
fake verify step advances by a known cost plus seeded noise.
"""
import heapq
import itertools

import numpy as np
import pytest

from lookahead.engine.controller import GoodputController, path_probs_and_depths
from lookahead.engine.cost_model import CostCoefficients, StepCostModel, nonnegative_quadratic_min
from lookahead.drafters import DraftTree, TreeBudget

BIG = TreeBudget(64, 16)


def random_tree(rng, n: int, lo: float = 0.05, hi: float = 1.0) -> DraftTree:
    parents = [int(rng.integers(-1, i)) for i in range(n)]  # node 0: -1
    return DraftTree(rng.integers(0, 1000, n), np.array(parents), rng.uniform(lo, hi, n).astype(np.float32))


def goodput_of(trees, chain_lens, kv_lens, cost: StepCostModel) -> float:
    """G of a selection: (bonus tokens of decoding requests + Σ path probs) / predicted seconds,
    where the extra seconds of prefill chunks (chains longer than one token) are sunk."""
    decoding = sum(1 for c in chain_lens if c == 1)
    r, kv, q0 = len(trees), sum(kv_lens), sum(chain_lens)
    sunk = cost.predict(r, q0, kv) - cost.predict(r, decoding, kv)
    gain = decoding + sum(t.path_probs().sum() for t in trees)
    return gain / (cost.predict(r, q0 + sum(len(t) for t in trees), kv) - sunk)


def same_tree(a: DraftTree, b: DraftTree) -> bool:
    return (np.array_equal(a.tokens, b.tokens) and np.array_equal(a.parents, b.parents)
            and np.array_equal(a.scores, b.scores))


class FakeClock:
    """perf_counter stand-in: time moves only when a fake step says so."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# ---- (a) cheap verification: keep what beats the current goodput -----------------------------------------


def test_keeps_probable_nodes_and_drops_those_below_the_goodput():
    """Linear cost: 10 ms a step + 1 ms a query token. One request, bonus token = 1.

    Path probs 0.9, 0.72, 0.36 (chain) and 0.05 (a second root child). Plain:
    1 token / 11 ms = 91/s. 0.9 → 1.9 / 12 ms = 158; 0.72 → 2.62 / 13 ms = 202;
    0.36 → 2.98 / 14 ms = 213; 0.05 / 1 ms = 50/s is below 213: dropped.
    """
    tree = DraftTree.from_paths([[1, 2, 3], [4]], [[0.9, 0.8, 0.5], [0.05]])
    cost = StepCostModel.fixed(base=0.010, per_query_token=0.001)
    ctl = GoodputController("goodput", cost)
    (kept,) = ctl.select([tree], [1], [100])
    assert kept.paths() == [[1, 2, 3]]
    d = ctl.last_decision
    assert d.kept.tolist() == [3]
    assert d.expected_tokens == pytest.approx(1 + 0.9 + 0.72 + 0.36, rel=1e-6)
    assert d.predicted_seconds == pytest.approx(0.014)
    assert d.goodput == pytest.approx(2.98 / 0.014, rel=1e-6)
    assert d.plain_goodput == pytest.approx(1 / 0.011)


@pytest.mark.parametrize("seed", range(20))
def test_linear_cost_keeps_exactly_the_nodes_worth_more_than_the_goodput(seed):
    """With a constant marginal cost c, the kept set is {p > G·c}: every kept node earns
    more than the final goodput per second it costs, every dropped node less."""
    rng = np.random.default_rng(seed)
    trees = [random_tree(rng, int(rng.integers(0, 20))) for _ in range(int(rng.integers(1, 9)))]
    c = float(rng.uniform(1e-4, 3e-3))
    ctl = GoodputController("goodput", StepCostModel.fixed(base=0.02, per_query_token=c))
    kept = ctl.select(trees, [1] * len(trees), [500] * len(trees))
    threshold = ctl.last_decision.goodput * c
    for tree, k in zip(trees, kept):
        p = tree.path_probs()
        assert sorted(k.path_probs().tolist()) == sorted(p[p > threshold].tolist())


# ---- (b) expensive verification: nothing ------------------------------------------------------------------


@pytest.mark.parametrize("batch, cost", [
    # CPU-like, every token costs: plain G = 8 / 85 ms = 94/s; a node needs p > 0.94.
    (8, StepCostModel.fixed(base=0.005, per_query_token=0.010)),
    # Batch 32 already past a knee at 16 tokens: plain G = 32 / 104 ms; a node needs p > 1.2.
    (32, StepCostModel.fixed(base=0.040, past_knee=4e-3, knee=16)),
])
def test_compute_bound_batch_speculates_nothing(batch, cost):
    rng = np.random.default_rng(0)
    trees = [random_tree(rng, 32, hi=0.9) for _ in range(batch)]
    ctl = GoodputController("goodput", cost)
    kept = ctl.select(trees, [1] * batch, [1000] * batch)
    assert [len(t) for t in kept] == [0] * batch
    d = ctl.last_decision
    assert d.goodput == d.plain_goodput and d.expected_tokens == batch


def test_compute_bound_still_takes_a_certain_token():
    """Not a blanket 'off': with a linear cost a node sure to be accepted yields 1 token
    for c seconds, while plain decoding yields B / (base + B·c) < 1 / c tokens per second.
    The 0.9 after it is below the bar (0.94 of the first case above)."""
    ctl = GoodputController("goodput", StepCostModel.fixed(base=0.005, per_query_token=0.010))
    trees = [DraftTree.chain([7, 8], [1.0, 0.9])] + [DraftTree.empty()] * 7
    kept = ctl.select(trees, [1] * 8, [1000] * 8)
    assert kept[0].tokens.tolist() == [7]


# ---- (c) the greedy is optimal: brute force on tiny batches -----------------------------------------------


def valid_subsets(tree: DraftTree, budget: TreeBudget):
    """Every parent-closed node set of `tree` within `budget`, as bool masks."""
    depth = tree.depths()
    for bits in itertools.product([False, True], repeat=len(tree)):
        keep = np.array(bits, bool)
        closed = all(not keep[i] or tree.parents[i] < 0 or keep[tree.parents[i]] for i in range(len(tree)))
        if closed and keep.sum() <= budget.max_nodes and (depth[keep] <= budget.max_depth).all():
            yield keep


def heap_greedy(trees, chain_lens, kv_lens, cost, budget):
    """The marginal rule written literally: pop the most probable frontier node (a node
    whose parent is chosen); add it while it raises G; children join the frontier."""
    gains, n_tokens = float(len(trees)), sum(chain_lens)
    r, kv = len(trees), sum(kv_lens)
    keep = [np.zeros(len(t), bool) for t in trees]
    probs, depths = [t.path_probs() for t in trees], [t.depths() for t in trees]
    frontier = [(-probs[b][i], b, i) for b, t in enumerate(trees) for i in t.children(-1)]
    heapq.heapify(frontier)
    while frontier:
        neg_p, b, i = heapq.heappop(frontier)
        if keep[b].sum() >= budget.max_nodes or depths[b][i] > budget.max_depth:
            continue  # this request is full (or too deep): the next node may still be another's
        g_now = gains / cost.predict(r, n_tokens, kv)
        if (gains - neg_p) / cost.predict(r, n_tokens + 1, kv) <= g_now:
            break
        keep[b][i] = True
        gains, n_tokens = gains - neg_p, n_tokens + 1
        for c in trees[b].children(i):
            heapq.heappush(frontier, (-probs[b][c], b, int(c)))
    return [t.subset(k) for t, k in zip(trees, keep)]


def tiny_case(seed):
    rng = np.random.default_rng(seed)
    trees = [random_tree(rng, int(rng.integers(0, 6))) for _ in range(2)]
    cost = StepCostModel.fixed(base=float(rng.uniform(0.001, 0.02)), per_request=float(rng.uniform(0, 0.002)),
                               per_query_token=float(rng.choice([0.0, rng.uniform(0, 0.005)])),
                               per_kv_token=1e-7, past_knee=float(rng.uniform(0, 0.01)), knee=int(rng.integers(1, 8)),
                               padded=bool(rng.integers(2)))  # a staircase: the CPU's padded rows
    budget = TreeBudget(int(rng.integers(1, 6)), int(rng.integers(1, 5)))
    chains = [int(rng.integers(1, 3)) for _ in trees]
    return trees, chains, [int(rng.integers(0, 500)) for _ in trees], cost, budget


@pytest.mark.parametrize("seed", range(300))
def test_greedy_equals_brute_force_optimum(seed):
    """Exact optimality, not an approximation bound: the cost depends on the node count
    alone and path probabilities never grow along a path, so the best prefix of the
    probability order is the best selection of all, for a convex cost and for the
    CPU's staircase alike (proof in controller.py). Checked against every valid
    selection of 2 trees."""
    trees, chains, kvs, cost, budget = tiny_case(seed)
    ctl = GoodputController("goodput", cost, max_budget=budget)
    chosen = ctl.select(trees, chains, kvs)
    best = max(goodput_of([trees[0].subset(a), trees[1].subset(b)], chains, kvs, cost)
               for a in valid_subsets(trees[0], budget) for b in valid_subsets(trees[1], budget))
    assert goodput_of(chosen, chains, kvs, cost) == pytest.approx(best, rel=1e-12)
    if all(c == 1 for c in chains):  # the reported goodput is the whole step's
        assert ctl.last_decision.goodput == pytest.approx(best, rel=1e-9)


@pytest.mark.parametrize("seed", range(50))
def test_matches_the_literal_heap_greedy(seed):
    """Same nodes, same order, same scores as the one-node-at-a-time frontier heap."""
    rng = np.random.default_rng(seed)
    trees = [random_tree(rng, int(rng.integers(0, 40))) for _ in range(int(rng.integers(1, 12)))]
    cost = StepCostModel.fixed(base=0.03, per_query_token=2e-5, past_knee=float(rng.uniform(0, 1e-3)),
                               knee=int(rng.integers(8, 128)))
    budget = TreeBudget(int(rng.integers(1, 40)), int(rng.integers(1, 10)))
    chains, kvs = [1] * len(trees), [1000] * len(trees)
    got = GoodputController("goodput", cost, max_budget=budget).select(trees, chains, kvs)
    want = heap_greedy(trees, chains, kvs, cost, budget)
    assert all(same_tree(g, w) for g, w in zip(got, want))
    for g in got:  # valid trees: the checking constructor accepts them
        DraftTree(g.tokens, g.parents, g.scores)


def test_max_budget_caps_each_request():
    tree = DraftTree.chain(list(range(10)), [1.0] * 10)
    free = StepCostModel.fixed(base=0.01)
    kept = GoodputController("goodput", free, max_budget=TreeBudget(4, 3)).select([tree, tree], [1, 1], [0, 0])
    assert [len(t) for t in kept] == [3, 3]


def test_path_probs_and_depths_match_the_tree():
    rng = np.random.default_rng(1)
    tree = random_tree(rng, 200)
    p, d = path_probs_and_depths(tree.parents.astype(np.int64), tree.scores)
    np.testing.assert_allclose(p, tree.path_probs(), rtol=1e-12)
    assert d.tolist() == tree.depths().tolist()


# ---- (e) fixed and off ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(10))
def test_fixed_mode_is_prune_to_the_fixed_budget_whatever_the_cost(seed):
    rng = np.random.default_rng(seed)
    trees = [random_tree(rng, int(rng.integers(0, 50))) for _ in range(6)]
    budget = TreeBudget(int(rng.integers(0, 20)), int(rng.integers(0, 6)))
    dear = StepCostModel.fixed(base=0.001, per_query_token=1.0)
    ctl = GoodputController("fixed", dear, fixed_budget=budget)
    kept = ctl.select(trees, [1] * 6, [10] * 6)
    assert all(same_tree(k, t.prune(budget)) for k, t in zip(kept, trees))
    assert ctl.last_decision.kept.tolist() == [len(t.prune(budget)) for t in trees]


def test_off_mode_verifies_nothing():
    rng = np.random.default_rng(0)
    trees = [random_tree(rng, 10) for _ in range(3)] + [DraftTree.empty()]
    ctl = GoodputController("off", StepCostModel.fixed(base=0.02))
    assert [len(t) for t in ctl.select(trees, [1] * 4, [10] * 4)] == [0] * 4
    assert ctl.last_decision.expected.tolist() == [1.0] * 4
    assert ctl.last_decision.goodput == pytest.approx(4 / 0.02)


def test_empty_batch_and_empty_trees():
    ctl = GoodputController("goodput", StepCostModel.fixed(base=0.02))
    assert ctl.select([], [], []) == []
    kept = ctl.select([DraftTree.empty(), DraftTree.chain([3], [0.9]), DraftTree.empty()], [1, 1, 1], [5, 5, 5])
    assert [len(t) for t in kept] == [0, 1, 0]


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="goodput, fixed, off"):
        GoodputController("always")


# ---- (d) the cost model: online fit from a fake clock --------------------------------------------------------

TRUE = CostCoefficients(base=0.012, per_request=2e-4, per_query_token=1e-5, per_kv_token=5e-8, past_knee=8e-5,
                        knee=256)


def run_fake_steps(model: StepCostModel, steps: int, seed: int, noise: float = 0.02):
    """Time `steps` fake verify steps of random batches with an injected clock and feed the model."""
    rng, clock = np.random.default_rng(seed), FakeClock()
    for _ in range(steps):
        r = int(rng.integers(1, 33))
        q = r + int(rng.integers(0, 32 * r + 1))  # one chain token each + draft nodes
        kv = r * int(rng.integers(100, 4000))
        start = clock()
        clock.now += TRUE.predict(r, q, kv) * (1 + noise * rng.standard_normal())  # the fake step
        model.observe(r, q, kv, clock() - start)


def test_cost_model_recovers_known_coefficients():
    model = StepCostModel()  # the default prior (an H100 curve) is far from TRUE
    run_fake_steps(model, 3000, seed=0)
    got, want = model.coefficients.vector(), TRUE.vector()
    np.testing.assert_allclose(got, want, rtol=0.1)
    rng = np.random.default_rng(1)
    for r, q, kv in zip(rng.integers(1, 33, 50), rng.integers(1, 1024, 50), rng.integers(100, 100_000, 50)):
        assert model.predict(r, q, kv) == pytest.approx(TRUE.predict(r, q, kv), rel=0.02)


def test_cost_model_prior_before_data_and_fixed_ignores_data():
    prior = CostCoefficients(base=0.05, past_knee=1e-4, knee=64)
    assert StepCostModel(prior).predict(4, 100, 1000) == pytest.approx(prior.predict(4, 100, 1000))
    fixed = StepCostModel.fixed(base=0.05)
    fixed.observe(1, 1, 1, 9.0)
    assert fixed.predict(1, 1, 1) == 0.05


def test_padded_cost_model_prices_the_measured_stair_and_the_controller_fills_it():
    """fp32 on the CPU multiplies at least 16 rows (cpu_linear.py): every step of up to 16 query
    tokens is one stair, priced at its measured mean once measured, so the controller fills it
    (15 nodes cost what plain decoding costs); past it, and for other batch sizes, the line."""
    model = StepCostModel(CostCoefficients(base=0.03, per_query_token=0.004, past_knee=0.0, padded=True))
    assert model.predict(1, 4, 500) != pytest.approx(0.060, abs=1e-4)  # the line, before data
    for q in (1, 5, 16):
        model.observe(1, q, 500, 0.060)
    for q in (1, 2, 9, 16):
        assert model.predict(1, q, 500) == pytest.approx(0.060)
    assert model.predict(1, 40, 500) == pytest.approx(model.coefficients.predict(1, 40, 500))  # past the stair
    assert model.predict(2, 4, 500) == pytest.approx(model.coefficients.predict(2, 4, 500))  # another batch size
    chain = DraftTree.chain(list(range(20)), [0.8] * 20)
    kept = GoodputController("goodput", model, max_budget=TreeBudget(20, 20)).select([chain], [1], [500])
    assert len(kept[0]) >= 15  # the whole stair is free


def test_cost_model_coefficients_stay_non_negative():
    """Steps that get faster with more KV (noise, caching effects) must not buy a negative
    KV coefficient: that would make the marginal cost of a token fall as Q grows."""
    model = StepCostModel(forget=1.0)
    rng = np.random.default_rng(0)
    for _ in range(300):
        q, kv = int(rng.integers(1, 300)), int(rng.integers(0, 50_000))
        model.observe(8, q, kv, 0.03 + 1e-5 * q - 1e-7 * kv + 1e-4 * rng.standard_normal())
    c = model.coefficients.vector()
    assert (c >= 0).all() and c[3] == 0.0


def test_one_slow_step_is_clipped():
    """A Triton compile or GC pause (100× a normal step) moves predictions a little, not 100×."""
    model = StepCostModel()
    run_fake_steps(model, 500, seed=2, noise=0.0)
    before = model.predict(8, 64, 8000)
    model.observe(8, 64, 8000, 100 * before)
    assert model.predict(8, 64, 8000) < 1.1 * before


@pytest.mark.parametrize("seed", range(20))
def test_nonnegative_quadratic_min_meets_the_optimality_conditions(seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((12, 5)) * np.array([1, 10, 100, 1e4, 1e2])
    h, g = a.T @ a, a.T @ rng.standard_normal(12)
    for guess in (None, rng.uniform(-1, 1, 5)):
        theta = nonnegative_quadratic_min(h, g, guess=guess)
        grad = h @ theta - g  # KKT: θ ≥ 0, grad ≥ 0, θ·grad = 0
        scale = np.sqrt(np.diag(h)) * np.abs(g).max()
        assert (theta >= 0).all()
        assert (grad / scale >= -1e-9).all()
        assert np.abs(theta * grad).max() <= 1e-9 * np.abs(g).max() * max(1.0, np.abs(theta).max())


def test_controller_with_a_learnt_cost_model_decides_as_with_the_truth():
    """The loop the engine runs: select → (timed) verify → observe, on an injected clock.

    In closed loop the batches rarely go far past the knee, so the fit learns the
    curve where the controller works rather than every coefficient; what matters is
    that after warm-up its choices earn, under the true cost, what the truth's do.
    """
    rng = np.random.default_rng(3)
    learnt, clock = StepCostModel(), FakeClock()
    true_cost = StepCostModel.fixed(**vars(TRUE))
    ctl, oracle = GoodputController("goodput", learnt), GoodputController("goodput", true_cost)
    ratios = []
    for step in range(400):
        b = int(rng.integers(1, 33))
        trees = [random_tree(rng, int(rng.integers(0, 48))) for _ in range(b)]
        chains, kvs = [1] * b, [int(x) for x in rng.integers(100, 4000, b)]
        kept = ctl.select(trees, chains, kvs)
        oracle.select(trees, chains, kvs)
        ratios.append(goodput_of(kept, chains, kvs, true_cost) / oracle.last_decision.goodput)
        q, kv = sum(chains) + sum(map(len, kept)), sum(kvs)
        start = clock()
        clock.now += TRUE.predict(b, q, kv) * (1 + 0.02 * rng.standard_normal())
        learnt.observe(b, q, kv, clock() - start)
    assert min(ratios) > 0.5  # the prior (an H100 curve) is far from TRUE, yet step 1 is not a disaster
    assert min(ratios[100:]) > 0.98 and np.mean(ratios[100:]) > 0.995
