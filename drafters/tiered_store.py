"""A retrieval datastore in two tiers: a large read-only base that many processes share, and a small local one that learns.

On a Ray cluster the driver builds the corpus store once and every worker maps it
read-only from the object store (no copy, no second sort); each worker adds past
outputs, its own and the fleet's, to its local tier. Drafting asks both tiers and
keeps the longer match, as one store holding both would; on a tie the two trees are
merged, pooling their occurrences.

>>> base = RetrievalStore(); base.add([1, 2, 3, 4])
>>> store = TieredStore(base)
>>> store.add([2, 3, 9])                           # a past output: the local tier learns it
>>> sorted(store.draft([7, 2, 3], TreeBudget(8, 4))[0].paths())   # "2 3" in both tiers
[[4], [9]]
>>> store.draft([1, 2], TreeBudget(8, 4))[0].paths()              # "1 2" only in the base
[[3, 4]]
>>> len(store), len(base)                          # the base is never written
(7, 4)
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from .retrieval import RetrievalStore
from .tree import DraftTree, TreeBudget


class TieredStore:
    """`RetrievalStore`'s drafting interface over a read-only `base` and a local store that `add`s go to."""

    def __init__(self, base: RetrievalStore, local: RetrievalStore | None = None):
        self.base = base
        self.local = local if local is not None else RetrievalStore(base.key_len, base.probes, base.max_children)

    def __len__(self) -> int:
        return len(self.base) + len(self.local)

    def add(self, token_ids: Sequence[int]) -> None:
        self.local.add(token_ids)

    def extend(self, documents: Iterable[Sequence[int]]) -> None:
        self.local.extend(documents)

    def draft(self, context: Sequence[int], budget: TreeBudget, max_match: int = 16) -> tuple[DraftTree, int]:
        (base_tree, base_len), (local_tree, local_len) = (
            tier.draft(context, budget, max_match) for tier in (self.base, self.local))
        if base_len != local_len:
            return (base_tree, base_len) if base_len > local_len else (local_tree, local_len)
        if len(local_tree) == 0:
            return base_tree, base_len
        return DraftTree.merge([base_tree, local_tree]).prune(budget), base_len
