"""Which drafted nodes the target accepts: greedy, and lossless sampling for drafts without probabilities.

Row 0 of a request's logits belongs to its last committed token; row 1 + i to tree node i.

Greedy example: the target wants 7 then 9; the tree offers 7→8 and 7→9 and 4.
>>> import numpy as np
>>> from lookahead.drafters import DraftTree
>>> tree = DraftTree.from_paths([[7, 8], [7, 9], [4]])
>>> accept_greedy(tree, np.array([7, 9, 0, 5, 3]))  # argmax at root, node 0 (7), 1 (8), 2 (9), 3 (4)
Acceptance(nodes=[0, 2], tokens=[7, 9, 5])
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from lookahead.drafters.tree import DraftTree


@dataclass
class Acceptance:
    nodes: list[int]  # accepted tree nodes, root to leaf
    tokens: list[int]  # their tokens plus the target's bonus token
    logprobs: list[dict] | None = field(default=None, repr=False)  # per token, when asked for (token_logprobs)
    successors: np.ndarray | None = field(default=None, repr=False)  # int64 [len(tokens), k]: the target's likeliest at each

    @property
    def rows(self) -> list[int]:
        """The logit row that chose each token: the root's (row 0), then each accepted node's."""
        return [0] + [1 + n for n in self.nodes]


def children_lists(tree: DraftTree) -> list[list[int]]:
    """children[p + 1] = node indices whose parent is p (p = -1 is the root)."""
    kids: list[list[int]] = [[] for _ in range(len(tree) + 1)]
    for i, p in enumerate(tree.parents.tolist()):
        kids[p + 1].append(i)
    return kids


def accept_greedy(tree: DraftTree, targets: np.ndarray) -> Acceptance:
    """Follow the child equal to the target's argmax; the first miss gives the bonus token.

    targets: int [N + 1], the argmax of each logit row.
    """
    kids = children_lists(tree)
    tokens = tree.tokens.tolist()
    nodes, cur = [], -1
    while True:
        want = int(targets[cur + 1])
        nxt = next((c for c in kids[cur + 1] if tokens[c] == want), None)
        if nxt is None:
            return Acceptance(nodes, [tokens[n] for n in nodes] + [want])
        nodes.append(nxt)
        cur = nxt


def target_probs(logits: torch.Tensor, temperature: float, top_p: float, top_k: int = 0,
                 min_p: float = 0.0) -> torch.Tensor:
    """float64 [rows, V]: the distribution plain sampling would draw from (SamplingParams' order:
    temperature, top-k, top-p, min-p, renormalised after each cut).

    >>> p = target_probs(torch.tensor([[2.0, 1.0, 0.0, -1.0]]), 1.0, 1.0, top_k=2)
    >>> [round(x, 3) for x in p[0].tolist()]
    [0.731, 0.269, 0.0, 0.0]
    >>> target_probs(torch.tensor([[2.0, 1.0, 0.0]]), 1.0, 1.0, min_p=0.5)[0].tolist()
    [1.0, 0.0, 0.0]
    """
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    if 0 < top_k < probs.shape[-1]:  # ties with the k-th token stay
        probs = torch.where(probs >= probs.topk(top_k, dim=-1).values[..., -1:], probs, 0.0)
        probs /= probs.sum(-1, keepdim=True)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        # keep the smallest prefix whose mass reaches top_p (the first token always stays)
        drop = sorted_p.cumsum(-1) - sorted_p >= top_p
        sorted_p[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
        probs /= probs.sum(-1, keepdim=True)
    if min_p > 0.0:
        probs = torch.where(probs >= min_p * probs.max(-1, keepdim=True).values, probs, 0.0)
        probs /= probs.sum(-1, keepdim=True)
    return probs


def accept_sampling(
    tree: DraftTree, logits: torch.Tensor, temperature: float, top_p: float, rng: np.random.Generator,
    top_k: int = 0, min_p: float = 0.0,
) -> Acceptance:
    """Lossless: output tokens are distributed exactly as sampling from the target.

    At a node with children c1..ck and target distribution p, try each child in turn:
    accept it with probability p(ci); on rejection set p(ci) = 0 and renormalise. If
    every child is rejected, or there is none, the bonus token is drawn from what is left.
    This is speculative sampling with a point-mass draft per child, applied recursively.
    """
    kids = children_lists(tree)
    tokens = tree.tokens.tolist()
    nodes, cur = [], -1
    while True:
        p = target_probs(logits[cur + 1 : cur + 2], temperature, top_p, top_k, min_p)[0].cpu().numpy()
        nxt = None
        for c in kids[cur + 1]:
            total = p.sum()
            if total <= 0:
                break
            if rng.random() * total < p[tokens[c]]:
                nxt = c
                break
            p[tokens[c]] = 0.0
        if nxt is None:
            bonus = int(rng.choice(len(p), p=p / p.sum()))
            return Acceptance(nodes, [tokens[n] for n in nodes] + [bonus])
        nodes.append(nxt)
        cur = nxt


def token_logprobs(logits: torch.Tensor, acc: Acceptance, top: int) -> list[dict]:
    """Each emitted token's log-probability under the model (log-softmax of its row), with the `top`
    likeliest alternatives. Row by row in float64, so a row's numbers do not depend on its neighbours.

    >>> acc = Acceptance(nodes=[0], tokens=[1, 0])
    >>> lp = token_logprobs(torch.tensor([[0.0, 1.0], [2.0, 0.0]]), acc, top=1)
    >>> [(e["token"], round(e["logprob"], 3), e["top"][0][0]) for e in lp]
    [(1, -0.313, 1), (0, -0.127, 0)]
    """
    out = []
    for row, token in zip(acc.rows, acc.tokens):
        lp = torch.log_softmax(logits[row].double(), dim=-1)
        best = lp.topk(top) if top else None
        out.append({"token": token, "logprob": float(lp[token]),
                    "top": [] if best is None else list(zip(best.indices.tolist(), best.values.tolist()))})
    return out
