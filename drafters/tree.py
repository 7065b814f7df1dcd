"""The value every drafter returns: a scored token tree hanging off the last committed token.

Example: after "the cat", a drafter guesses "sat on" or "sat in" or "is":

>>> t = DraftTree.from_paths([[5, 7], [5, 8], [9]], [[0.9, 0.6], [0.9, 0.3], [0.1]])
>>> t.tokens.tolist(), t.parents.tolist()
([5, 7, 8, 9], [-1, 0, 0, -1])
>>> t.depths().tolist()
[1, 2, 2, 1]
>>> [round(x, 2) for x in t.path_probs().tolist()]
[0.9, 0.54, 0.27, 0.1]
>>> t.prune(TreeBudget(max_nodes=2, max_depth=8)).tokens.tolist()
[5, 7]
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import tree_kernels as kernels


class TreeError(ValueError):
    """A malformed tree or budget (user-facing: one line, no traceback)."""


@dataclass(frozen=True)
class TreeBudget:
    """How much tree a request may verify in one step."""

    max_nodes: int = 32
    max_depth: int = 16

    def __post_init__(self):
        if not (0 <= self.max_nodes <= 1024):
            raise TreeError(f"max_nodes must be in [0, 1024], got {self.max_nodes}")
        if not (0 <= self.max_depth <= 1024):
            raise TreeError(f"max_depth must be in [0, 1024], got {self.max_depth}")


@dataclass
class DraftTree:
    """Draft tokens as a tree; node i's parent comes before it.

    tokens  int64   [N]  token id of each node
    parents int32   [N]  index of the parent node, -1 = child of the last committed token
    scores  float32 [N]  estimated P(node accepted | parent accepted), in [0, 1]
    """

    tokens: np.ndarray
    parents: np.ndarray
    scores: np.ndarray

    def __post_init__(self):
        self.tokens = np.ascontiguousarray(self.tokens, dtype=np.int64)
        self.parents = np.ascontiguousarray(self.parents, dtype=np.int32)
        self.scores = np.ascontiguousarray(self.scores, dtype=np.float32)
        if self.tokens.ndim != 1 or self.parents.ndim != 1 or self.scores.ndim != 1:
            self._broken(1)
        self._broken(kernels.broken_rule(self.tokens, self.parents, self.scores))

    RULES = ("tokens, parents and scores must be 1-D of one length",
             "every parent must come before its child (parents[i] < i)",
             "parents must be -1 (root) or a node index",
             "scores must be probabilities in [0, 1]",
             "token ids must be non-negative")

    def _broken(self, rule: int) -> None:
        """Raise TreeError for rule number `rule` (1-based, as tree_kernels.broken_rule); 0 = none."""
        if rule == 1:
            raise TreeError(f"{self.RULES[0]}, got {np.shape(self.tokens)}, {np.shape(self.parents)}, "
                            f"{np.shape(self.scores)}")
        if rule:
            raise TreeError(self.RULES[rule - 1])

    # ---- construction -------------------------------------------------------------
    @staticmethod
    def empty() -> "DraftTree":
        return DraftTree(np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))

    @staticmethod
    def unchecked(tokens: np.ndarray, parents: np.ndarray, scores: np.ndarray) -> "DraftTree":
        """A tree from arrays already of the right dtypes and valid by construction.

        For drafters' compiled kernels on the propose path: the checks above cost
        ~17 µs per tree (measured, 2-core CPU), more than a suffix-automaton lookup.
        Their tests build the same arrays through the checking constructor.
        """
        tree = object.__new__(DraftTree)
        tree.tokens, tree.parents, tree.scores = tokens, parents, scores
        return tree

    @staticmethod
    def chain(tokens, scores=None) -> "DraftTree":
        n = len(tokens)
        scores = np.ones(n, np.float32) if scores is None else scores
        return DraftTree(np.asarray(tokens), np.arange(-1, n - 1), np.asarray(scores))

    @staticmethod
    def from_paths(paths, path_scores=None) -> "DraftTree":
        """A trie of token paths; a shared prefix becomes one node (first score wins)."""
        builder = TrieBuilder()
        for k, path in enumerate(paths):
            scores = None if path_scores is None else path_scores[k]
            builder.add_path(path, scores)
        return builder.build()

    # ---- shape queries --------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.tokens)

    def depths(self) -> np.ndarray:
        """int32 [N]: 1 for children of the committed token."""
        return kernels.depths(self.parents)

    def path_probs(self) -> np.ndarray:
        """float64 [N]: P(node accepted) = product of scores from the root to the node."""
        return kernels.path_probs(self.parents, self.scores)

    def ancestor_masks(self) -> np.ndarray:
        """bool [N, N]: row i marks node i and its ancestors (parent's row | itself)."""
        n = len(self)
        m = np.zeros((n, n), bool)
        for i, par in enumerate(self.parents):
            if par >= 0:
                m[i] = m[par]
            m[i, i] = True
        return m

    def paths(self) -> list[list[int]]:
        """Token lists from the root to every leaf, in node order of the leaves."""
        is_leaf = np.ones(len(self), bool)
        is_leaf[self.parents[self.parents >= 0]] = False
        out = []
        for leaf in np.flatnonzero(is_leaf):
            path, i = [], leaf
            while i >= 0:
                path.append(int(self.tokens[i]))
                i = self.parents[i]
            out.append(path[::-1])
        return out

    def children(self, node: int) -> np.ndarray:
        """Indices of the children of `node` (-1 = the root's)."""
        return np.flatnonzero(self.parents == node)

    # ---- transformations ----------------------------------------------------------------
    def subset(self, keep: np.ndarray) -> "DraftTree":
        """The nodes in `keep` (bool [N]); each kept node's parent must be kept too."""
        keep = np.asarray(keep, bool)
        idx = np.flatnonzero(keep)
        remap = np.full(len(self), -1, np.int32)
        remap[idx] = np.arange(len(idx), dtype=np.int32)
        par = self.parents[idx]
        if ((par >= 0) & ~keep[np.maximum(par, 0)]).any():
            raise TreeError("subset drops a parent but keeps its child")
        new_par = np.where(par >= 0, remap[np.maximum(par, 0)], -1)
        return DraftTree(self.tokens[idx], new_par, self.scores[idx])

    def prune(self, budget: TreeBudget) -> "DraftTree":
        """Keep the `max_nodes` most probable nodes within `max_depth` (the tree itself if it fits).

        A node's path probability never exceeds its parent's, so the top-k set by
        path probability (ties broken toward earlier nodes) is always a valid subtree.
        Raises TreeError if the tree breaks a rule of the constructor.
        """
        tokens, parents, scores, broken = kernels.prune(self.tokens, self.parents, self.scores,
                                                        budget.max_nodes, budget.max_depth)
        self._broken(broken)  # a drafter's unchecked tree may be malformed: the engine learns it here
        return self if tokens is self.tokens else DraftTree.unchecked(tokens, parents, scores)

    @staticmethod
    def merge(trees: list["DraftTree"], weights=None) -> "DraftTree":
        """One trie of several trees: same token under the same parent = one node.

        Scores of a shared node combine as 1 - prod(1 - w_k * s_k) (any source right),
        with weights w_k in [0, 1] (default 1).
        """
        if not trees:
            return DraftTree.empty()
        if weights is not None and len(weights) != len(trees):
            raise ValueError(f"got {len(weights)} weights for {len(trees)} trees")
        tokens, parents, scores, broken = kernels.merge(
            np.concatenate([t.tokens for t in trees]), np.concatenate([t.parents for t in trees]),
            np.concatenate([t.scores for t in trees]), np.array([len(t) for t in trees], np.int64),
            np.ones(len(trees)) if weights is None else np.asarray(weights, np.float64))
        if broken:
            raise TreeError(DraftTree.RULES[broken - 1])
        return DraftTree.unchecked(tokens, parents, scores)


class TrieBuilder:
    """Incremental trie over (parent, token) keys, from token paths (DraftTree.from_paths)."""

    def __init__(self):
        self.tokens: list[int] = []
        self.parents: list[int] = []
        self.miss: list[float] = []  # product of (1 - score) over sources
        self.index: dict[tuple[int, int], int] = {}

    def node(self, parent: int, token: int, score: float) -> int:
        key = (parent, int(token))
        i = self.index.get(key)
        if i is None:
            i = len(self.tokens)
            self.index[key] = i
            self.tokens.append(int(token))
            self.parents.append(parent)
            self.miss.append(1.0 - float(score))
        else:
            self.miss[i] *= 1.0 - float(score)
        return i

    def add_path(self, path, scores=None) -> None:
        parent = -1
        for j, tok in enumerate(path):
            s = 1.0 if scores is None else scores[j]
            key = (parent, int(tok))
            if key in self.index:  # first score wins for from_paths
                parent = self.index[key]
            else:
                parent = self.node(parent, tok, s)

    def build(self) -> DraftTree:
        return DraftTree(
            np.array(self.tokens, np.int64),
            np.array(self.parents, np.int32),
            np.clip(1.0 - np.array(self.miss, np.float64), 0.0, 1.0).astype(np.float32),
        )
