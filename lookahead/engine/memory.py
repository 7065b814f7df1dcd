"""Running out of GPU memory: a step retried with less, and limits that grow back.

An attempt leaves no trace: the forward writes only its scratch buffers, and commit writes
only cache slots past each request's kv_len, which no attention reads until update moves
kv_len. So a retry starts clean, prefill chunks included, and gives the same greedy tokens
(sampled ones from the same distribution: a failed attempt's draws are just discarded).
"""
from __future__ import annotations

import gc
from dataclasses import dataclass, field

import torch

from lookahead.drafters import TreeBudget
from lookahead.engine.step import StepItem, StepStats


@dataclass
class MemoryBackoff:
    """How much one step may verify after running out of GPU memory, and how that grows back.

    An out-of-memory step is retried smaller: first the draft nodes per request are halved
    (from the largest tree in the step), down to none (plain decoding); then the batch is
    halved (the requests left out go first next step). The limit that fitted is kept, so a
    load that does not fit is not paid for with a failed forward every step: after
    `grow_after` successful steps in a row the limit doubles, batch first, then nodes. A
    load that never fits thus costs one failed forward per `grow_after` steps (about 6 %).

    >>> m = MemoryBackoff(max_nodes=32, max_batch=8)
    >>> m.shrink(largest_tree=20, batch=8); (m.nodes, m.batch)
    (10, 8)
    >>> m.shrink(largest_tree=0, batch=8); (m.nodes, m.batch)
    (10, 4)
    """

    max_nodes: int  # the configured limits, which the backoff grows back to
    max_batch: int
    grow_after: int = 16
    nodes: int = field(init=False)  # draft nodes per request at most, now
    batch: int = field(init=False)  # requests per forward at most, now
    streak: int = field(init=False, default=0)  # successful steps since the limit last changed
    failed_attempts: int = field(init=False, default=0)  # attempts that ran out of memory, over the engine's life

    def __post_init__(self):
        self.nodes, self.batch = self.max_nodes, self.max_batch

    def shrink(self, largest_tree: int, batch: int) -> None:
        """After an OOM of a step with this largest tree and batch size."""
        if largest_tree:
            self.nodes = largest_tree // 2
        else:
            self.batch = max(1, batch // 2)
        self.streak = 0

    def succeeded(self) -> None:
        self.streak += 1
        if self.streak < self.grow_after:
            return
        self.streak = 0
        if self.batch < self.max_batch:
            self.batch = min(self.max_batch, 2 * self.batch)
        elif self.nodes < self.max_nodes:
            self.nodes = min(self.max_nodes, max(1, 2 * self.nodes))

    def run(self, attempt, items: list[StepItem], max_depth: int) -> tuple[list[StepItem], StepStats | None]:
        """`attempt(items) -> StepStats`, retried smaller after each out-of-memory error.

        Returns the items that ran (a prefix of `items`, pruned) and the step's stats (their
        `oom_retries` set); or one item whose request fits in no way (its error set) and None.
        """
        retries = 0
        while True:
            try:
                stats = attempt(items)
                break
            except torch.OutOfMemoryError:
                pass  # out of the except block first: its traceback holds the attempt's tensors
            free_memory()
            retries += 1
            self.failed_attempts += 1
            largest = max(len(it.tree) for it in items)
            if largest == 0 and len(items) == 1:
                req = items[0].request
                req.error = (f"request {req.id}: out of GPU memory even with no draft tree and batch 1 "
                             f"({len(items[0].chain)} new tokens on {req.kv_len} cached)")
                return items, None
            self.shrink(largest, len(items))
            budget = TreeBudget(self.nodes, max_depth)
            items = [StepItem(it.request, it.chain, it.tree.prune(budget)) for it in items[: self.batch]]
        stats.oom_retries = retries
        self.succeeded()
        return items, stats


def free_memory() -> None:
    """Hand a failed attempt's scratch and activations back before the retry allocates anew."""
    gc.collect()  # frames of the failed forward may sit in reference cycles
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
