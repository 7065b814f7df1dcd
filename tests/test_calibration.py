"""Online calibration: what observe() labels, and convergence to true acceptance."""
import numpy as np
import pytest

from lookahead.drafters import Calibrated, Drafter, DraftTree, OnlineCalibrator, TreeBudget


class FixedDrafter(Drafter):
    """Proposes the same tree every step and records the tokens it is given."""

    name = "fixed"

    def __init__(self, tree):
        self.tree, self.seen = tree, {}

    def start(self, request_id, prompt_ids):
        self.seen[request_id] = list(prompt_ids)

    def propose(self, request_id, budget):
        return self.tree

    def update(self, request_id, accepted_ids):
        self.seen[request_id] += list(accepted_ids)

    def stop(self, request_id):
        del self.seen[request_id]


# 1 -> {2 -> {4}, 3}, 5
TREE = DraftTree.from_paths([[1, 2, 4], [1, 3], [5]], [[0.5, 0.5, 0.5], [0.5, 0.5], [0.5]])


def observed(accepted):
    cal = OnlineCalibrator()
    cal.observe(TREE, accepted)
    return [(s["depth"], s["observed"], s["rate"]) for s in cal.stats()]


@pytest.mark.parametrize(
    "accepted, want",
    [
        ([7], [(1, 2, 0.0)]),  # both root children wrong; nothing deeper is observed
        ([1], [(1, 2, 0.5)]),  # only the bonus token: depth 2 unobserved
        ([1, 3], [(1, 2, 0.5), (2, 2, 0.5)]),  # 3 right, 2 wrong; 4 under a wrong node
        ([1, 2, 4, 6], [(1, 2, 0.5), (2, 2, 0.5), (3, 1, 1.0)]),  # leaf reached: 6 labels nothing
        ([], []),
    ],
)
def test_observe_labels_children_of_the_accepted_walk(accepted, want):
    assert observed(accepted) == want


def test_no_data_keeps_raw_scores():
    t = DraftTree.from_paths([[1, 2], [3]], [[0.93, 0.2], [0.05]])
    np.testing.assert_allclose(OnlineCalibrator().calibrate(t).scores, t.scores, rtol=1e-6)


def test_converges_to_true_acceptance():
    """Raw scores say 0.9 and 0.9; the truth is 0.3 at depth 1 and 0.6 at depth 2 given depth 1."""
    rng = np.random.default_rng(0)
    tree = DraftTree.chain([1, 2], [0.9, 0.9])
    cal = OnlineCalibrator()
    for _ in range(4000):
        if rng.random() >= 0.3:
            cal.observe(tree, [9])
        elif rng.random() >= 0.6:
            cal.observe(tree, [1, 9])
        else:
            cal.observe(tree, [1, 2, 9])
    got = cal.calibrate(tree).scores
    assert abs(got[0] - 0.3) < 0.03 and abs(got[1] - 0.6) < 0.05
    depth1, depth2 = cal.stats()
    assert depth1["mean_raw"] == pytest.approx(0.9) and depth1["observed"] == 4000
    assert abs(depth2["rate"] - 0.6) < 0.05


def test_wrapper_learns_from_its_own_updates():
    inner = FixedDrafter(DraftTree.chain([1, 2], [0.5, 0.5]))
    d = Calibrated(inner)
    d.start("r", [0])
    for _ in range(200):
        d.propose("r", TreeBudget(8, 8))
        d.update("r", [1, 7])  # 1 right, 2 wrong (the target chose 7)
    d.update("r", [3])  # no proposal since the last update: nothing observed
    s = d.propose("r", TreeBudget(8, 8)).scores
    assert s[0] > 0.95 and s[1] < 0.05
    assert [x["observed"] for x in d.stats()] == [200, 200]
    assert inner.seen["r"] == [0] + [1, 7] * 200 + [3]
    d.stop("r")
    assert "r" not in inner.seen
