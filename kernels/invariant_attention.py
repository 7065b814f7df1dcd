"""Tree attention whose every query row is computed exactly as plain decoding computes it (CPU).

Same contract as `tree_attention_reference` (tree_attention.py), and one more promise: the
output row of a query is bitwise independent of the other queries, trees and requests in
the call, and equal to what the call gives for the same token decoded alone (one new token,
its ancestors already in the cache). That is what makes speculative output equal plain
output in every dtype.

How: a query at position p reduces over exactly the keys at positions 0..p that it sees, in
position order, in fixed blocks of BLOCK positions aligned at position 0, whatever part of
them is cached, part of the causal chain or one of its tree ancestors:

  * keys every query of a request sees (its cached prefix, then its causal chain: the
    prompt chunk or the bonus token) are scored in blocks [BLOCK, D] @ [D, queries];
  * a tree node's blocks from the one holding the first tree position on are its own: their
    scores are gathered (the shared keys' from the shared scores, its ancestors' from one
    product of the new keys with every query), their values gathered per node;
  * scores, the max and exp are elementwise; each block's weighted sum of values and of
    ones (the softmax denominator) is one product [D + 1, BLOCK] @ [BLOCK, queries]; the
    blocks are summed in position order by a sequential scan (cumsum), so blocks that hold
    nothing (zeros) change nothing.

Every product has fixed M and K and at least MIN_COLUMNS columns (invariant_gemm.py), and
the query's key blocks are the same blocks in both calls, so the same floating-point
operations run in the same order.

A long prefill chunk (more than MAX_TREE_ROWS new tokens and no tree) goes to the reference
(`attend_request`, in blocks of query rows) instead: it is the same chunk of the same request in
plain and speculative decoding, so a deterministic computation is enough there.

>>> import torch
>>> q = k = v = torch.ones(2, 1, 4)
>>> cache = torch.zeros(1, 16, 1, 4)
>>> out = tree_attention_invariant(q, k, v, cache, cache, torch.zeros(1, 1, dtype=torch.int32),
...     torch.zeros(1, dtype=torch.int32), torch.tensor([0, 2], dtype=torch.int32),
...     torch.tensor([[0b01], [0b11]]), scale=0.5)
>>> out[:, 0].tolist()
[[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .invariant_gemm import pad_columns
from .tree_attention import RequestPlan, attend_request, memoised, prefix_rows, request_trees

BLOCK = 64  # key positions per block
MAX_TREE_ROWS = 128  # more new tokens than this, with no tree, is a prefill chunk (the reference)


@dataclass
class InvariantPlan:
    """One request's layer-invariant part of a step (built once per step and window).

    rows           (s, e): its new tokens are rows s:e of q, k_new and v_new; T = e - s
    chain          c: new tokens 0..c-1 are a causal chain that every later token sees
    prefix         int64 [n]: its cached positions as rows of the flattened cache
    shared_hidden  bool [NB_S * BLOCK, R]: key position (cache, then chain) hidden from query
                   column r = token * group + head (tree nodes see the shared blocks only below
                   tail_start); R = T * group padded to MIN_COLUMNS
    tail_start     first position of the tree nodes' own blocks (a multiple of BLOCK)
    tail_index     int64 [(T - c) * NB_T * BLOCK]: for tree node i and position tail_start + j,
                   the row of [shared keys tail_start.., new keys (T), a zero row] it reads
    tail_hidden    bool [T - c, NB_T, BLOCK, 1]
    prefill        a long prefill chunk's plan for the reference, else None
    """

    rows: tuple[int, int]
    chain: int
    prefix: torch.Tensor
    shared_hidden: torch.Tensor | None = None
    tail_start: int = 0
    tail_index: torch.Tensor | None = None
    tail_hidden: torch.Tensor | None = None
    prefill: RequestPlan | None = None


def causal_chain(tree: torch.Tensor, positions: torch.Tensor, n_prefix: int) -> int:
    """c: how many leading new tokens form a causal chain at positions n, n+1, ... that every later token sees.

    >>> chain = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 1]], dtype=torch.bool)  # token 0, then two siblings
    >>> causal_chain(chain, torch.tensor([5, 6, 6]), 5)
    1
    """
    t = tree.shape[0]
    idx = torch.arange(t, device=tree.device)
    lower = idx[None, :] <= idx[:, None]
    exact_row = (tree == lower).all(1)  # sees exactly tokens 0..i
    seen_after = (tree | ~lower).all(0)  # every token i' >= j sees j
    good = exact_row & seen_after & (positions.to(tree.device) == n_prefix + idx)
    return int(torch.cumprod(good.int(), 0).sum())


def plan_invariant(block_table, kv_lens, qo_indptr, tree_mask, block_size: int, group: int, *,
                   window: int | None = None, positions: torch.Tensor | None = None) -> list[InvariantPlan]:
    """group: query heads per KV head. positions: the new tokens' position ids; without them,
    kv_len + depth (what the engine feeds)."""
    out = []
    for b, n, (s, e), tree in request_trees(kv_lens, qo_indptr, tree_mask):
        t = e - s
        pos = (positions[s:e].to(tree.device, torch.int64) if positions is not None
               else n + tree.sum(1) - 1)
        c = causal_chain(tree, pos, n)
        prefix = prefix_rows(block_table[b], n, block_size)
        if c == t and t > MAX_TREE_ROWS:
            k_pos = torch.cat([torch.arange(n, device=tree.device), pos])
            vis = k_pos[None, :] <= pos[:, None]
            if window is not None:
                vis &= (pos[:, None] - k_pos[None, :]) < window
            prefill = RequestPlan((s, e), prefix, None if vis.all() else vis)
            out.append(InvariantPlan((s, e), c, prefix, prefill=prefill))
            continue
        n_shared = n + c
        nb_s = max(1, -(-n_shared // BLOCK))  # one block even when nothing is shared (a hidden one)
        key_pos = torch.arange(nb_s * BLOCK, device=tree.device)
        tail_start = (n_shared // BLOCK) * BLOCK if c < t else nb_s * BLOCK
        limit = torch.where(torch.arange(t, device=tree.device) < c, pos + 1,
                            torch.full_like(pos, tail_start))  # shared positions below this, per token
        shared = (key_pos[:, None] < limit[None, :]) & (key_pos[:, None] < n_shared)
        if window is not None:
            shared &= (pos[None, :] - key_pos[:, None]) < window
        shared = shared.repeat_interleave(group, 1)
        padding = (key_pos < n_shared)[:, None].expand(-1, pad_columns(t * group) - t * group)
        plan = InvariantPlan((s, e), c, prefix, ~torch.cat([shared, padding], 1), tail_start)
        if c < t:
            nodes = pos[c:]
            nb_t = -(-(int(nodes.max()) + 1 - tail_start) // BLOCK)
            width = nb_t * BLOCK
            own = n_shared - tail_start  # shared keys in the first tail block
            zero_row = own + t
            index = torch.full((t - c, width), zero_row, dtype=torch.int64)
            index[:, :own] = torch.arange(own)
            i, j = torch.nonzero(tree[c:, c:], as_tuple=True)
            slot = nodes[j] - tail_start
            if torch.unique(i * width + slot).numel() != i.numel():
                raise ValueError("tree attention needs one visible token per position (a valid tree)")
            index[i, slot] = own + c + j
            hidden = index == zero_row
            if window is not None:
                tail_pos = tail_start + torch.arange(width)
                hidden |= (nodes[:, None] - tail_pos[None, :]) >= window
            plan.tail_index, plan.tail_hidden = index.reshape(-1), hidden.view(t - c, nb_t, BLOCK, 1)
        out.append(plan)
    return out


def tree_attention_invariant(
    q, k_new, v_new, k_cache, v_cache, block_table, kv_lens, qo_indptr, tree_mask, scale: float,
    *, window: int | None = None, softcap: float | None = None, positions: torch.Tensor | None = None,
    plans: dict | None = None,
) -> torch.Tensor:
    """Shapes as tree_attention_reference. plans: the per-step memo."""
    plan = memoised(plans, ("invariant", window), lambda: plan_invariant(
        block_table, kv_lens, qo_indptr, tree_mask, k_cache.shape[1], q.shape[1] // k_new.shape[1],
        window=window, positions=positions))
    out = torch.empty_like(q)
    kv_heads, d = k_new.shape[1], k_new.shape[2]
    flat_k, flat_v = k_cache.reshape(-1, kv_heads, d), v_cache.reshape(-1, kv_heads, d)
    for req in plan:
        s, e = req.rows
        if req.prefill is not None:
            out[s:e] = attend_request(q[s:e], k_new[s:e], v_new[s:e], flat_k, flat_v, req.prefill, scale, softcap)
        else:
            out[s:e] = _request(q[s:e], k_new[s:e], v_new[s:e], flat_k, flat_v, req, scale, softcap).to(q.dtype)
    return out


def _scores(keys, queries, scale, softcap):
    """keys [..., BLOCK, D] @ queries [..., D, N] -> scaled (and capped) scores [..., BLOCK, N]."""
    s = torch.matmul(keys, queries) * scale
    return softcap * torch.tanh(s / softcap) if softcap is not None else s


def _positions_major(flat_cache, prefix, new, length: int, width: int) -> torch.Tensor:
    """fp32 [Hkv, length, width]: a request's cached keys (or values) by position, then `new`, zeros after;
    columns past D are left for the caller."""
    n, c, d = len(prefix), len(new), new.shape[2]
    out = torch.empty(new.shape[1], length, width, dtype=torch.float32)
    out[:, :n, :d] = torch.index_select(flat_cache, 0, prefix).transpose(0, 1)
    out[:, n : n + c, :d] = new.transpose(0, 1)
    out[:, n + c :, :d] = 0.0
    return out


def _request(q, k_new, v_new, flat_k, flat_v, req: InvariantPlan, scale, softcap):
    """One request: q [T, Hq, D] -> fp32 [T, Hq, D]."""
    t, hq, d = q.shape
    hkv = k_new.shape[1]
    g = hq // hkv
    c = req.chain
    length, r = req.shared_hidden.shape
    nb_s = length // BLOCK
    keys = _positions_major(flat_k, req.prefix, k_new[:c], length, d)  # [Hkv, L, D]
    vals = _positions_major(flat_v, req.prefix, v_new[:c], length, d + 1)  # [Hkv, L, D + 1]
    vals[..., d] = 1.0  # its product with the weights is the softmax denominator
    # Queries as columns (token, head in group), padded: [Hkv, D, R]
    cols = t * g
    qt = q.float().view(t, hkv, g, d).permute(1, 3, 0, 2).reshape(hkv, d, cols)
    qt = F.pad(qt, (0, r - cols)).contiguous()
    scores = _scores(keys.view(hkv, nb_s, BLOCK, d), qt[:, None], scale, softcap).view(hkv, length, r)
    tree_cols = slice(c * g, cols)
    if c < t:
        tail = _Tail(req, scores, keys, qt, k_new, v_new, vals, g, scale, softcap)
    scores.masked_fill_(req.shared_hidden, float("-inf"))
    m = scores.max(1).values  # [Hkv, R]
    if c < t:
        m_tree = torch.maximum(m[:, tree_cols].reshape(hkv, t - c, g), tail.scores.max(2).values)
        m[:, tree_cols] = m_tree.reshape(hkv, -1)
        tail_out = tail.weighted_values(m_tree)  # [Hkv, T - c, NB_T, D + 1, 16]
    e_shared = torch.exp(scores - m[:, None, :]).view(hkv, nb_s, BLOCK, r)
    shared_out = torch.matmul(vals.view(hkv, nb_s, BLOCK, d + 1).transpose(2, 3), e_shared)  # [Hkv, NB_S, D+1, R]
    acc = torch.empty(hkv, d + 1, cols, dtype=torch.float32)
    acc[..., : c * g] = shared_out[..., : c * g].cumsum(1)[:, -1]
    if c < t:
        nb_t = tail_out.shape[2]
        tail_cols = tail_out[..., :g].permute(0, 2, 3, 1, 4).reshape(hkv, nb_t, d + 1, (t - c) * g)
        seq = torch.cat([shared_out[..., tree_cols], tail_cols], dim=1)
        acc[..., tree_cols] = seq.cumsum(1)[:, -1]
    o = acc[:, :d] / acc[:, d:]  # [Hkv, D, cols]
    return o.view(hkv, d, t, g).permute(2, 0, 3, 1).reshape(t, hq, d)


class _Tail:
    """The tree nodes' own blocks (positions from tail_start on), read through `req.tail_index` from a table of
    [the shared positions tail_start.., the new tokens, a hidden row].

    Scores are gathered, not recomputed: a key's score with a query column is the same element
    whichever product computed it (every product here has BLOCK rows and >= MIN_COLUMNS columns),
    so the shared keys' come from the shared scores and the new tokens' from one product of
    their keys with all query columns. Values are gathered per node: each node's block sums its
    own ancestors.
    """

    def __init__(self, req: InvariantPlan, scores, keys, qt, k_new, v_new, vals, g, scale, softcap):
        hkv, _, r = scores.shape
        t, d = k_new.shape[0], k_new.shape[2]
        c = req.chain
        self.nodes, self.nb_t = req.tail_hidden.shape[:2]
        start, n_shared = req.tail_start, len(req.prefix) + c
        n_blocks = -(-t // BLOCK)
        new_keys = keys.new_zeros(hkv, n_blocks * BLOCK, d)
        new_keys[:, :t] = k_new.transpose(0, 1)
        new_scores = _scores(new_keys.view(hkv, n_blocks, BLOCK, d), qt[:, None], scale, softcap)
        table = torch.cat([scores[:, start:n_shared], new_scores.view(hkv, -1, r)[:, :t],
                           scores.new_full((hkv, 1, r), float("-inf"))], dim=1)
        rows = table.shape[1]
        table = table[:, :, c * g : t * g].reshape(hkv, rows, self.nodes, g).transpose(1, 2)  # [Hkv, nodes, rows, G]
        width = self.nb_t * BLOCK
        index = req.tail_index.view(1, self.nodes, width, 1).expand(hkv, -1, -1, g)
        self.scores = torch.gather(table, 2, index)  # [Hkv, nodes, width, G]
        self.scores.masked_fill_(req.tail_hidden.view(1, self.nodes, width, 1), float("-inf"))
        new_v = torch.cat([v_new.float(), v_new.new_ones(t, hkv, 1, dtype=torch.float32)], dim=2).transpose(0, 1)
        table_v = torch.cat([vals[:, start:n_shared], new_v, vals.new_zeros(hkv, 1, d + 1)], dim=1)
        self.values = torch.index_select(table_v, 1, req.tail_index).view(hkv, self.nodes, self.nb_t, BLOCK, d + 1)

    def weighted_values(self, m: torch.Tensor) -> torch.Tensor:
        """m [Hkv, nodes, G]: each column's max score -> [Hkv, nodes, NB_T, D + 1, MIN_COLUMNS] block sums."""
        hkv, nodes, width, g = self.scores.shape
        e = torch.exp(self.scores - m[:, :, None, :])
        e = F.pad(e, (0, pad_columns(g) - g)).view(hkv, nodes, self.nb_t, BLOCK, -1)
        return torch.matmul(self.values.transpose(3, 4), e)
