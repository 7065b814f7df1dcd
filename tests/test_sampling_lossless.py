"""Lossless sampling, proven statistically: with any draft tree, emitted tokens follow the target's distribution.

The rule: at a node with children c1..ck, accept ci with probability p(ci), on a
miss zero p(ci) and renormalise, and draw the bonus from what is left. Here a tiny
vocabulary, a fixed target "model" (logits as a function of the context), random
draft trees (tokens of zero, tiny and large probability) and many samples: the
first emitted token and the first two tokens jointly must pass a chi-square
goodness-of-fit test against the exact target distribution, computed independently
from the same logits with the same temperature and top-p. Negative controls show
the test catches biased acceptors. The seeds are fixed, so the tests are deterministic.

LOOKAHEAD_FULL_SOAK=1 draws 5x more samples (100k and 50k; 6,000 engine runs).
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from conftest import tiny_model
from lookahead.engine import accept as engine_module
from lookahead.drafters import Drafter, DraftTree, TokenRecyclingDrafter, TreeBudget
from lookahead.engine import Engine, EngineConfig, SamplingParams
from lookahead.engine.acceptance import Acceptance, accept_sampling, children_lists

FULL = os.environ.get("LOOKAHEAD_FULL_SOAK") == "1"
ALPHA = 1e-3  # a correct acceptor fails a test with this probability (per test, fixed seeds: never in practice)
V = 6  # vocabulary of the synthetic target


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny forwards: a second thread only adds overhead


# ---- statistics (no scipy here: the chi-square tail is the regularised upper incomplete gamma) ----
def chi2_pvalue(counts: np.ndarray, probs: np.ndarray, min_expected: float = 5.0) -> float:
    """Goodness of fit of observed counts to exact cell probabilities; cells with E < 5 are pooled.

    A count in a cell of probability 0 is an immediate failure (p = 0).
    """
    counts = np.asarray(counts, np.float64).ravel()
    probs = np.asarray(probs, np.float64).ravel()
    assert abs(probs.sum() - 1) < 1e-9
    if counts[probs == 0].sum() > 0:
        return 0.0
    n = counts.sum()
    expected = n * probs
    big = expected >= min_expected
    obs = list(counts[big])
    exp = list(expected[big])
    if (~big & (probs > 0)).any():
        obs.append(counts[~big].sum())
        exp.append(expected[~big].sum())
    obs, exp = np.array(obs), np.array(exp)
    stat = float(((obs - exp) ** 2 / exp).sum())
    df = len(obs) - 1
    assert df >= 1, "too few cells for a chi-square test"
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64),
                                         torch.tensor(stat / 2, dtype=torch.float64)))


def test_chi2_pvalue_sanity():
    rng = np.random.default_rng(0)
    p = np.array([0.5, 0.3, 0.15, 0.05])
    assert chi2_pvalue(rng.multinomial(10_000, p), p) > ALPHA
    assert chi2_pvalue(rng.multinomial(10_000, [0.45, 0.35, 0.15, 0.05]), p) < 1e-6
    assert chi2_pvalue(np.array([10, 0, 0, 1]), np.array([0.5, 0.5, 0.0, 0.0])) == 0.0


# ---- the exact target, written independently of lookahead/engine/acceptance.py ------------------------------
def exact_probs(logits: np.ndarray, temperature: float, top_p: float, top_k: int = 0, min_p: float = 0.0) -> np.ndarray:
    """float64 [V]: softmax(logits / T), restricted to the k most probable tokens (and ties with the k-th),
    then to the smallest most-probable set of mass >= top_p, then to tokens of at least min_p times the
    most probable one's probability; renormalised after each cut."""
    z = np.asarray(logits, np.float64) / temperature
    z = z - z[np.isfinite(z)].max()
    p = np.exp(z)
    p /= p.sum()
    if top_k:
        p = np.where(p >= np.sort(p)[::-1][top_k - 1], p, 0.0)
        p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        keep = np.zeros_like(p, bool)
        mass = 0.0
        for t in order:
            keep[t] = True
            mass += p[t]
            if mass >= top_p:
                break
        p = np.where(keep, p, 0.0)
        p /= p.sum()
    if min_p:
        p = np.where(p >= min_p * p.max(), p, 0.0)
        p /= p.sum()
    return p


class SyntheticTarget:
    """A fixed next-token distribution for every context (tuple of tokens): a tiny 'language model'.

    Every row sends one token to probability 0 (logit -inf) and one to ~1e-13 (logit -30),
    chosen by the context, so drafted tokens of zero and negligible probability are common.
    """

    def __init__(self, seed: int):
        self.seed = seed
        self.rows: dict[tuple, np.ndarray] = {}

    def logits(self, context: tuple) -> np.ndarray:
        row = self.rows.get(context)
        if row is None:
            g = np.random.default_rng([self.seed, len(context), *context])
            row = g.normal(0.0, 1.3, V)
            zero, tiny = g.choice(V, 2, replace=False)
            row[zero] = -np.inf
            row[tiny] = -30.0
            self.rows[context] = row
        return row

    def exact_first_two(self, temperature: float, top_p: float, **cuts) -> tuple[np.ndarray, np.ndarray]:
        p1 = exact_probs(self.logits(()), temperature, top_p, **cuts)
        joint = np.stack([p1[a] * exact_probs(self.logits((a,)), temperature, top_p, **cuts) for a in range(V)])
        return p1, joint


# The drafts' token choice is skewed on purpose: with tokens drawn uniformly from the vocabulary,
# some wrong acceptors (e.g. one that never zeroes a rejected child) are exactly unbiased on average
# and no sample size would catch them. Real drafters are far from uniform.
DRAFT_WEIGHTS = 0.5 ** np.arange(V)[np.random.default_rng(3).permutation(V)]


def pick_tokens(rng: np.random.Generator, weights: np.ndarray, n: int, parents_out: list, tokens_out: list) -> None:
    """Append up to n nodes: random parents, skewed tokens, no token twice under one parent."""
    weights = [float(w) for w in weights]
    used: dict[int, set] = {}
    for u, r in zip(rng.random(n).tolist(), rng.random(n).tolist()):
        parent = int(u * (len(tokens_out) + 1)) - 1  # the root or any node so far
        taken = used.setdefault(parent, set())
        free = [(t, w) for t, w in enumerate(weights) if t not in taken]
        if not free:
            continue
        r *= sum(w for _, w in free)
        for tok, w in free:  # inverse CDF over the free tokens
            r -= w
            if r < 0:
                break
        taken.add(tok)
        tokens_out.append(tok)
        parents_out.append(parent)


def random_tree(rng: np.random.Generator, max_nodes: int = 10) -> DraftTree:
    tokens, parents = [], []
    pick_tokens(rng, DRAFT_WEIGHTS, int(rng.integers(0, max_nodes + 1)), parents, tokens)
    return DraftTree(np.array(tokens, np.int64), np.array(parents, np.int32), rng.uniform(0, 1, len(tokens)))


def node_paths(tree: DraftTree) -> list[tuple]:
    paths: list[tuple] = []
    for tok, par in zip(tree.tokens.tolist(), tree.parents.tolist()):
        paths.append((paths[par] if par >= 0 else ()) + (tok,))
    return paths


def sample_first_two(acceptor, target: SyntheticTarget, temperature: float, top_p: float, n: int, seed: int):
    """Counts of the first token [V] and of the first two tokens [V, V] over n generations.

    Each generation runs speculative steps (a fresh random tree each) until two tokens are out,
    as the engine does: the second step's tree hangs off the first step's output.
    """
    rng = np.random.default_rng(seed)
    first = np.zeros(V, np.int64)
    pair = np.zeros((V, V), np.int64)
    for _ in range(n):
        out: tuple = ()
        while len(out) < 2:
            tree = random_tree(rng)
            rows = [target.logits(out)] + [target.logits(out + p) for p in node_paths(tree)]
            acc = acceptor(tree, torch.tensor(np.stack(rows)), temperature, top_p, rng)
            assert len(acc.tokens) == len(acc.nodes) + 1
            assert [int(tree.tokens[i]) for i in acc.nodes] == acc.tokens[:-1]
            out += tuple(acc.tokens)
        first[out[0]] += 1
        pair[out[0], out[1]] += 1
    return first, pair


# ---- biased acceptors: the negative controls -------------------------------------------------------
def accept_first_child(tree, logits, temperature, top_p, rng):
    """Wrong: takes the root's first child whatever its probability."""
    kids = children_lists(tree)[0]
    if not kids:
        return accept_sampling(tree, logits, temperature, top_p, rng)
    c = kids[0]
    p = exact_probs(logits[c + 1].double().cpu().numpy(), temperature, top_p)
    return Acceptance([c], [int(tree.tokens[c]), int(rng.choice(len(p), p=p))])


def accept_without_renormalising(tree, logits, temperature, top_p, rng, top_k=0, min_p=0.0):
    """Wrong, subtly: a rejected child keeps its mass, so the bonus draw can repeat it."""
    kids = children_lists(tree)
    tokens = tree.tokens.tolist()
    nodes, cur = [], -1
    while True:
        p = exact_probs(logits[cur + 1].double().cpu().numpy(), temperature, top_p, top_k, min_p)
        nxt = next((c for c in kids[cur + 1] if rng.random() < p[tokens[c]]), None)
        if nxt is None:
            return Acceptance(nodes, [tokens[n] for n in nodes] + [int(rng.choice(len(p), p=p))])
        nodes.append(nxt)
        cur = nxt


SCALE = 5 if FULL else 1


@pytest.mark.parametrize("temperature,top_p,samples", [(1.0, 1.0, 20_000), (0.8, 0.9, 10_000)])
def test_accept_sampling_reproduces_target(temperature, top_p, samples):
    samples *= SCALE
    target = SyntheticTarget(seed=12)
    p1, joint = target.exact_first_two(temperature, top_p)
    if top_p < 1:
        assert (p1 == 0).sum() >= 2  # top-p really cuts tokens here (beyond the -inf one)
    first, pair = sample_first_two(accept_sampling, target, temperature, top_p, samples, seed=5)
    p_first, p_pair = chi2_pvalue(first, p1), chi2_pvalue(pair, joint)
    assert p_first > ALPHA, (first, p1 * samples)
    assert p_pair > ALPHA, (pair, joint * samples)


@pytest.mark.parametrize("cuts", [dict(top_k=3), dict(min_p=0.2), dict(top_k=4, min_p=0.1)])
def test_accept_sampling_with_top_k_and_min_p_reproduces_target(cuts):
    target = SyntheticTarget(seed=12)
    p1, joint = target.exact_first_two(0.9, 1.0, **cuts)
    assert (p1 == 0).sum() >= 2  # the cut really drops tokens here (beyond the -inf one)

    def acceptor(tree, logits, temperature, top_p, rng):
        return accept_sampling(tree, logits, temperature, top_p, rng, **cuts)

    first, pair = sample_first_two(acceptor, target, 0.9, 1.0, 10_000 * SCALE, seed=5)
    assert chi2_pvalue(first, p1) > ALPHA, (first, p1)
    assert chi2_pvalue(pair, joint) > ALPHA, (pair, joint)


@pytest.mark.parametrize("acceptor", [accept_first_child, accept_without_renormalising])
def test_chi_square_catches_a_biased_acceptor(acceptor):
    target = SyntheticTarget(seed=12)
    p1, joint = target.exact_first_two(1.0, 1.0)
    first, pair = sample_first_two(acceptor, target, 1.0, 1.0, 5_000, seed=5)
    assert min(chi2_pvalue(first, p1), chi2_pvalue(pair, joint)) < 1e-6


# ---- end to end: the engine with random trees samples like the engine without a drafter -------------
class RandomTreeDrafter(Drafter):
    """Random trees over the whole vocabulary (skewed token choice, no token twice under one parent)."""

    def __init__(self, vocab: int, seed: int, max_nodes: int = 12):
        self.vocab, self.max_nodes = vocab, max_nodes
        self.rng = np.random.default_rng(seed)
        self.weights = 0.6 ** np.arange(vocab)[self.rng.permutation(vocab)]  # skewed, as real drafts are
        self.live: set[str] = set()

    def start(self, request_id, prompt_ids):
        self.live.add(request_id)

    def propose(self, request_id, budget: TreeBudget) -> DraftTree:
        tokens, parents = [], []
        pick_tokens(self.rng, self.weights, int(self.rng.integers(0, self.max_nodes + 1)), parents, tokens)
        return DraftTree(np.array(tokens, np.int64), np.array(parents, np.int32),
                         self.rng.uniform(0.2, 1.0, len(tokens)))

    def update(self, request_id, accepted_ids):
        assert request_id in self.live

    def stop(self, request_id):
        self.live.discard(request_id)


E2E_VOCAB = 8
E2E_PROMPT = [3, 4, 5, 6, 7, 3]


def exact_model_tokens_2_3(model, temperature, top_p):
    """The target's exact distributions of output token 1 [V] and of tokens 2 and 3 jointly [V, V].

    Token 1 comes from the prefill step (no tree); tokens 2 and 3 are the first ones drafted over.
    """
    v = E2E_VOCAB
    model.set_attn_implementation("sdpa")
    try:
        with torch.no_grad():
            def last_rows(contexts):
                return model(torch.tensor(contexts)).logits[:, -1].double().numpy()
            p1 = exact_probs(last_rows([E2E_PROMPT])[0], temperature, top_p)
            p2 = [exact_probs(r, temperature, top_p) for r in last_rows([E2E_PROMPT + [a] for a in range(v)])]
            rows3 = last_rows([E2E_PROMPT + [a, b] for a in range(v) for b in range(v)])
    finally:
        model.set_attn_implementation("lookahead")
    joint = np.zeros((v, v))
    for a in range(v):
        for b in range(v):
            joint[b] += p1[a] * p2[a][b] * exact_probs(rows3[a * v + b], temperature, top_p)
    return p1, joint


def engine_outputs(model, drafter, n, temperature, top_p, seed) -> tuple[np.ndarray, int]:
    """int [n, 3]: the first three output tokens of n requests for the same prompt; drafts accepted."""
    engine = Engine(model, drafter=drafter, eos_token_ids=[],
                    config=EngineConfig(kv_cache_tokens=64 * 64, max_batch_size=64, controller="fixed",
                                        max_nodes=16, max_depth=4))
    params = SamplingParams(max_new_tokens=3, temperature=temperature, top_p=top_p, seed=seed)
    reqs = engine.run({f"s{i}": E2E_PROMPT for i in range(n)}, params)
    for r in reqs.values():
        assert r.error is None and len(r.output_ids) == 3
    assert engine.cache.free_blocks() == 64 * 64 // engine.cache.block_size
    return np.array([r.output_ids for r in reqs.values()]), sum(r.accepted for r in reqs.values())


def fit_pvalues(outputs: np.ndarray, p1: np.ndarray, joint23: np.ndarray) -> list[float]:
    v = E2E_VOCAB
    first = np.bincount(outputs[:, 0], minlength=v)
    pair = np.bincount(outputs[:, 1] * v + outputs[:, 2], minlength=v * v)
    return [chi2_pvalue(first, p1), chi2_pvalue(pair.reshape(v, v).sum(1), joint23.sum(1)),
            chi2_pvalue(pair, joint23)]


E2E_RUNS = 6000 if FULL else 1200


@pytest.mark.parametrize("temperature,top_p,drafter", [(1.5, 1.0, "random"), (1.0, 0.9, "random"),
                                                        (1.5, 1.0, "recycling")])
def test_engine_speculative_sampling_matches_plain(temperature, top_p, drafter):
    """Random trees, and the target's own recycled candidates (which learn from the sampled positions)."""
    model = tiny_model(seed=1, vocab=E2E_VOCAB)
    p1, joint = exact_model_tokens_2_3(model, temperature, top_p)
    plain, _ = engine_outputs(model, None, E2E_RUNS, temperature, top_p, seed=1)
    trees = RandomTreeDrafter(E2E_VOCAB, seed=2, max_nodes=16) if drafter == "random" else TokenRecyclingDrafter()
    spec, accepted = engine_outputs(model, trees, E2E_RUNS, temperature, top_p, seed=1)
    assert accepted > E2E_RUNS // 4  # trees were really used
    for name, outputs in (("plain", plain), ("speculative", spec)):
        pvalues = fit_pvalues(outputs, p1, joint)
        assert min(pvalues) > ALPHA, (name, pvalues)


def test_engine_chi_square_catches_a_biased_acceptor(monkeypatch):
    model = tiny_model(seed=1, vocab=E2E_VOCAB)
    p1, joint = exact_model_tokens_2_3(model, 1.5, 1.0)
    monkeypatch.setattr(engine_module, "accept_sampling", accept_without_renormalising)
    spec, _ = engine_outputs(model, RandomTreeDrafter(E2E_VOCAB, seed=2, max_nodes=16), E2E_RUNS, 1.5, 1.0, seed=1)
    assert min(fit_pvalues(spec, p1, joint)) < 1e-6

