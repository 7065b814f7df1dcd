"""How long a verify step takes, as a function of the batch, fitted online from measured steps.

The model is convex and piecewise linear in the batch's query tokens Q:

    seconds = base + per_request·R + per_query_token·Q + per_kv_token·KV
              + past_knee·max(0, Q − knee)

R requests, Q query tokens (chains + draft nodes), KV committed KV tokens. Below
the knee a forward is memory-bound and extra query tokens are nearly free; past it
the GEMMs are compute-bound and every token costs (measured on an H100 with an
8B-shaped model, bf16, HF eager, context 1024: ~40 ms at batch 1 for up to 64 query
tokens, 104 ms for 2048 at batch 32).
All coefficients are kept ≥ 0, so the marginal cost of a token never falls as Q
grows: the goodput controller's greedy choice relies on that (controller.py).

Fitting is exponentially weighted least squares on the normal equations, plus a
prior that never decays (pseudo-steps predicted by the prior coefficients), solved
as a 5-variable non-negative quadratic program when a prediction is next needed.

>>> m = StepCostModel.fixed(base=0.040, past_knee=3.6e-5, knee=256)
>>> round(m.predict(1, 64, 1024), 4), round(m.predict(32, 2048, 32768), 4)
(0.04, 0.1045)
>>> learner = StepCostModel(prior=m.coefficients)
>>> for q in (32, 64, 512, 1024, 2048) * 20:
...     learner.observe(32, q, 32768, 0.030 + 1e-5 * q)   # a leaner engine: no knee
>>> c = learner.coefficients
>>> round(c.predict(32, 2048, 32768) * 1000, 1), round(c.predict(32, 32, 32768) * 1000, 1)
(50.8, 30.5)

(The truth is 50.5 and 30.3 ms: the prior, which never decays, still pulls a little.)
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from lookahead.engine.cpu_linear import padded_rows, pads_rows
from lookahead.kernels.invariant_gemm import MIN_COLUMNS as MAX_ROWS  # rows at or below this are one stair

MIN_STEP_SECONDS = 1e-6  # a floor so that goodput (tokens / seconds) stays finite


@dataclass(frozen=True)
class CostCoefficients:
    """Seconds per verify step: see the module docstring for the formula."""

    base: float = 0.040  # per step, whatever the batch (launches, Python, weights read once)
    per_request: float = 0.0  # per request in the batch
    per_query_token: float = 0.0  # per query token, at any Q
    per_kv_token: float = 0.0  # per committed KV token attended to
    past_knee: float = 3.6e-5  # extra per query token beyond `knee`
    knee: int = 256  # query tokens in the batch where the forward turns compute-bound
    padded: bool = False  # Q counts as the rows the forward multiplies (cpu_linear pads few rows on the CPU)

    def rows(self, query_tokens) -> np.ndarray:
        """float64: the Q the formula sees for `query_tokens`."""
        q = np.asarray(query_tokens, np.float64)
        return padded_rows(q) if self.padded else q

    def features(self, requests, query_tokens, kv_tokens) -> np.ndarray:
        """float64 [..., 5]: the regressors the coefficients multiply (broadcasts over Q)."""
        q = self.rows(query_tokens)
        columns = np.broadcast_arrays(1.0, requests, q, kv_tokens, np.maximum(q - self.knee, 0.0))
        return np.stack(columns, axis=-1).astype(np.float64)

    def vector(self) -> np.ndarray:
        """float64 [5]: the coefficients in `features` order."""
        return np.array([self.base, self.per_request, self.per_query_token, self.per_kv_token, self.past_knee])

    def predict(self, requests, query_tokens, kv_tokens):
        """Predicted seconds; `query_tokens` may be an array (one prediction per entry)."""
        q = self.rows(query_tokens)
        t = (self.base + self.per_request * requests + self.per_query_token * q + self.per_kv_token * kv_tokens
             + self.past_knee * np.maximum(q - self.knee, 0.0))
        return np.maximum(t, MIN_STEP_SECONDS) if q.ndim else max(float(t), MIN_STEP_SECONDS)


# On a CPU a forward is compute-bound from the first extra query token, and in fp32 its exact
# linear layers multiply at least 16 rows (cpu_linear.py), so a step costs what its padded rows
# cost. On the project's 2-core VM SmolLM2's fp32 decode steps took about 40 ms plus 4 ms a row
# on a line (eval/RESULTS.md §1); the fp32 prior is 30 ms plus 4 ms a row. In bf16 a row costs
# less against the base: exact decode steps took about 35 ms plus 1.7 ms a row from 3 to 22
# rows (fixed prompt-lookup trees of 2 to 32 nodes, 2026-12-02), hence 30 ms plus 1.5 ms.
# Only the shape matters. Steps set the scale (and, once measured, the padded stair's own
# price: StepCostModel), but when every step verifies a similar number of tokens the fit
# cannot tell base from slope, and the prior's ratio decides. The ratio is the machine's
# compute over its memory bandwidth, so it holds for larger models on the same CPU.
CPU_PRIOR = CostCoefficients(base=0.03, per_query_token=0.004, past_knee=0.0, padded=True)
CPU_PRIOR_BF16 = CostCoefficients(base=0.03, per_query_token=0.0015, past_knee=0.0)


def prior_for(device: torch.device, dtype: torch.dtype, exact: bool = True) -> CostCoefficients:
    """The cost curve to start from for a model on `device` in `dtype` (`exact`: the invariant layout)."""
    if device.type != "cpu":
        return CostCoefficients()
    if dtype == torch.bfloat16:
        return CPU_PRIOR_BF16
    return replace(CPU_PRIOR, padded=exact and pads_rows(device, dtype))


# Batches at which the prior speaks: (requests, query tokens, KV tokens). They span
# all five features, so the fit is well posed from the first step on.
PRIOR_BATCHES = ((1, 1, 1024), (1, 64, 1024), (8, 8, 8192), (8, 512, 8192),
                 (32, 32, 32768), (32, 2048, 32768), (32, 1024, 131072))


class StepCostModel:
    """Verify-step seconds from (requests, query tokens, KV tokens); learns from observe().

    prior           coefficients before any data (default: the H100 curve above)
    prior_weight    how many steps each prior batch counts as; the prior never decays
    forget          weight kept by old observations per new one (0.999: half-life ~700 steps)
    trust_first     the first observations are taken as measured: the prior may be far off
                    (the H100 curve on a CPU is 50× too fast), and clipping against it
                    would keep the model from ever learning the real per-token cost
    max_ratio       after that, an observation above max_ratio × the current prediction is clipped to it:
                    one Triton compile or GC pause must not teach the controller that
                    tokens are expensive for the next hundred steps

    With a padded prior (the CPU in fp32) the model also keeps the mean measured time of
    each stair: (requests, padded rows) up to cpu_linear.MAX_ROWS, recent steps weighted
    most. Once a stair is measured its mean replaces the line there: the stairs
    do not lie on a line (on the project's VM SmolLM2's decode steps took 48, 59, 87 and
    105 ms at 2, 4, 8 and 16 rows, eval/RESULTS.md §1), and a line through them made 8
    rows look cheaper than they are. One step is enough: a stair priced too high is only
    not tried again, and one priced too low is corrected by the next step that buys it.
    A stair the controller never picks keeps the line's price.
    """

    def __init__(self, prior: CostCoefficients | None = None, prior_weight: float = 0.1, forget: float = 0.999,
                 max_ratio: float = 4.0, trust_first: int = 32, stair_forget: float = 0.95):
        self.prior = prior or CostCoefficients()
        self.forget, self.max_ratio, self.trust_first = forget, max_ratio, trust_first
        self.stair_forget = stair_forget
        self._stairs: dict[tuple[int, int], list[float]] = {}  # (requests, padded rows) -> [Σ w·seconds, Σ w]
        x = self.prior.features(*np.array(PRIOR_BATCHES, np.float64).T)  # [P, 5]
        self._prior_h = prior_weight * x.T @ x  # [5, 5]
        self._prior_g = prior_weight * x.T @ (x @ self.prior.vector())  # [5]
        self._h = np.zeros((5, 5))  # Σ w·x xᵀ over observations
        self._g = np.zeros(5)  # Σ w·x y
        self.observations = 0
        self.frozen = False
        self._fit: CostCoefficients | None = self.prior
        self._last_fit = self.prior  # for clipping observations without a solve per step

    @staticmethod
    def fixed(base: float = 0.040, per_request: float = 0.0, per_query_token: float = 0.0, per_kv_token: float = 0.0,
              past_knee: float = 0.0, knee: int = 256, padded: bool = False) -> "StepCostModel":
        """A model that ignores observe(): for tests and the replay simulator."""
        m = StepCostModel(CostCoefficients(base, per_request, per_query_token, per_kv_token, past_knee, knee, padded))
        m.frozen = True
        return m

    @property
    def coefficients(self) -> CostCoefficients:
        if self._fit is None:  # solved lazily: many observations may arrive between predictions
            theta = nonnegative_quadratic_min(self._prior_h + self._h, self._prior_g + self._g,
                                              guess=self._last_fit.vector())
            self._fit = self._last_fit = replace(self.prior, **dict(zip(("base", "per_request", "per_query_token", "per_kv_token",
                                                         "past_knee"), theta.tolist())))
        return self._fit

    def predict(self, requests, query_tokens, kv_tokens):
        """Seconds for one step of this batch; `query_tokens` may be an array."""
        line = self.coefficients.predict(requests, query_tokens, kv_tokens)
        if not self._stairs:
            return line
        rows = padded_rows(query_tokens)
        out = np.array(line, np.float64)
        for (r, stair), (total, weight) in self._stairs.items():
            if r == requests:
                out = np.where(rows == stair, total / weight, out)
        return out if out.ndim else float(out)

    def observe(self, requests: int, query_tokens: int, kv_tokens: int, seconds: float) -> None:
        """Learn from one measured step."""
        if self.frozen:
            return
        seconds = float(seconds)
        if self.observations >= self.trust_first:
            seconds = min(seconds, self.max_ratio * self._last_fit.predict(requests, query_tokens, kv_tokens))
        if self.prior.padded and query_tokens <= MAX_ROWS:
            stair = self._stairs.setdefault((int(requests), int(padded_rows(query_tokens))), [0.0, 0.0])
            stair[0] = self.stair_forget * stair[0] + seconds
            stair[1] = self.stair_forget * stair[1] + 1.0
        x = self.prior.features(requests, query_tokens, kv_tokens)
        self._h *= self.forget
        self._g *= self.forget
        self._h += np.outer(x, x)
        self._g += x * seconds
        self.observations += 1
        self._fit = None


def nonnegative_quadratic_min(h: np.ndarray, g: np.ndarray, guess: np.ndarray | None = None,
                              tol: float = 1e-12) -> np.ndarray:
    """argmin over θ ≥ 0 of ½θᵀHθ − gᵀθ for positive definite H (Lawson–Hanson active set).

    Least squares with θ ≥ 0 in normal-equation form. Features differ in scale by
    10⁵ (a constant vs KV tokens), so H is rescaled to unit diagonal first. `guess`
    (the previous solution) names the variables likely to be positive: if solving
    on those alone satisfies the optimality conditions, that is the answer (one 5×5
    solve, ~15 µs, against ~150 µs for the search from zero).

    >>> nonnegative_quadratic_min(np.eye(2), np.array([1.0, -2.0])).tolist()
    [1.0, 0.0]
    """
    s = 1.0 / np.sqrt(np.diag(h))
    h, g = h * np.outer(s, s), g * s
    if guess is not None:
        theta = _solve_on(h, g, guess > 0)
        if (theta >= 0).all() and ((g - h @ theta)[theta == 0] <= tol).all():
            return theta * s
    n = len(g)
    free = np.zeros(n, bool)
    theta = np.zeros(n)
    for _ in range(3 * n):  # each pass frees one variable; a handful suffice for n = 5
        grad = g - h @ theta  # descent direction; a fixed variable may enter if it points up
        grad[free] = -np.inf
        j = int(np.argmax(grad))
        if grad[j] <= tol:
            break
        free[j] = True
        while True:
            z = _solve_on(h, g, free)
            if (z >= 0).all():
                theta = z
                break
            # Step from θ toward z until the first free variable hits zero, and fix it there.
            bad = z < 0
            alpha = np.min(theta[bad] / (theta[bad] - z[bad]))
            theta = theta + alpha * (z - theta)
            free &= theta > tol
            theta[~free] = 0.0
    return theta * s


def _solve_on(h: np.ndarray, g: np.ndarray, free: np.ndarray) -> np.ndarray:
    """The unconstrained minimiser over the `free` variables, the others held at 0."""
    z = np.zeros(len(g))
    idx = np.flatnonzero(free)
    z[idx] = np.linalg.solve(h[np.ix_(idx, idx)], g[idx])
    return z
