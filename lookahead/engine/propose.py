"""Propose: each request's uncached chain and its drafter's tree, within the budget its output has left."""
from __future__ import annotations

from lookahead.drafters import Drafter, DraftTree, TreeBudget
from lookahead.engine.config import RequestError
from lookahead.engine.request import Request, isolated


def chain_of(req: Request, prefill_chunk: int) -> list[int]:
    """The request's committed tokens that still need their KV (a prefill chunk, or the bonus token)."""
    return req.tokens[req.kv_len : req.kv_len + prefill_chunk]


def budget_for(req: Request, nodes: int, max_depth: int) -> TreeBudget:
    """No node deeper than the output has room for: the bonus token follows the deepest accepted one."""
    left = req.params.max_new_tokens - len(req.output_ids)
    return TreeBudget(nodes, max(0, min(max_depth, left - 1)))


def propose(drafter: Drafter, req: Request, budget: TreeBudget, vocab_size: int | None) -> DraftTree:
    """The drafter's tree for `req`, pruned to `budget`; empty while prefilling or if the drafter fails
    (then `req.error` says why)."""
    if req.prefilling:
        return DraftTree.empty()
    tree = isolated(req, lambda: in_vocab(drafter.propose(req.id, budget).prune(budget), vocab_size))
    return tree if tree is not None else DraftTree.empty()


def in_vocab(tree: DraftTree, vocab_size: int | None) -> DraftTree:
    """A drafted id past the embedding table would crash the whole batch's forward: fail its request here."""
    if len(tree) and vocab_size is not None and int(tree.tokens.max()) >= vocab_size:
        raise RequestError(f"drafter proposed token id {int(tree.tokens.max())}, outside the vocabulary "
                           f"of {vocab_size}")
    return tree
