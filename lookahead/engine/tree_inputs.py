"""Flattening a batch of requests' new tokens (uncached chain + draft tree) into one target pass.

Per request the step feeds `chain` (committed tokens whose KV is not cached yet: the
whole prompt chunk at prefill, the one bonus token afterwards), then the nodes of its
draft tree, whose roots hang off the last chain token.

>>> import numpy as np
>>> from lookahead.drafters import DraftTree
>>> tree = DraftTree.from_paths([[7, 8], [9]])
>>> s = build_step_inputs([RequestSlice(chain=[5], kv_len=3, tree=tree)])
>>> s.input_ids.tolist(), s.position_ids.tolist()
([5, 7, 8, 9], [3, 4, 5, 4])
>>> s.tree_mask[:, 0].tolist()  # bit j: attends new token j of its request
[1, 3, 7, 9]
>>> s.logit_rows.tolist()  # last chain token, then every node
[0, 1, 2, 3]
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lookahead.drafters.tree import DraftTree


@dataclass
class RequestSlice:
    chain: list[int]  # committed tokens without KV yet, len >= 1
    kv_len: int  # positions already in the KV cache
    tree: DraftTree  # draft nodes; roots follow chain[-1]


@dataclass
class StepInputs:
    """One verify pass over B requests with ΣT new tokens and R scored rows.

    input_ids    int64 [ΣT]     position_ids int64 [ΣT]
    qo_indptr    int32 [B + 1]  kv_lens      int32 [B]
    tree_mask    int64 [ΣT, W]  bit j of word w: attends new token 64w + j of its request
    logit_rows   int64 [R]      rows whose next-token logits are needed
    logit_indptr int32 [B + 1]  request b owns logit_rows[logit_indptr[b]:logit_indptr[b+1]]
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    qo_indptr: torch.Tensor
    kv_lens: torch.Tensor
    tree_mask: torch.Tensor
    logit_rows: torch.Tensor
    logit_indptr: torch.Tensor

    def to(self, device) -> "StepInputs":
        return StepInputs(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def request_mask(n_chain: int, tree: DraftTree) -> np.ndarray:
    """bool [T, T]: chain is causal; a node sees the whole chain, its ancestors and itself."""
    t = n_chain + len(tree)
    m = np.zeros((t, t), bool)
    m[:n_chain, :n_chain] = np.tril(np.ones((n_chain, n_chain), bool))
    m[n_chain:, :n_chain] = True
    m[n_chain:, n_chain:] = tree.ancestor_masks()
    return m


_BIT_VALUES = np.uint64(1) << np.arange(64, dtype=np.uint64)


def pack_bits(dense: np.ndarray, words: int) -> np.ndarray:
    """int64 [rows, words] from bool [rows, n <= 64 * words]; bit j of word w = column 64w + j."""
    rows, n = dense.shape
    bits = np.zeros((rows, words * 64), np.uint64)
    bits[:, :n] = dense
    return (bits.reshape(rows, words, 64) * _BIT_VALUES).sum(-1, dtype=np.uint64).view(np.int64)


def build_step_inputs(requests: list[RequestSlice]) -> StepInputs:
    lengths = [len(r.chain) + len(r.tree) for r in requests]
    words = max(1, -(-max(lengths, default=1) // 64))
    ids, pos, masks, rows, row_counts = [], [], [], [], []
    offset = 0
    for r, t in zip(requests, lengths):
        c = len(r.chain)
        ids += [np.asarray(r.chain, np.int64), r.tree.tokens]
        pos += [r.kv_len + np.arange(c), r.kv_len + c - 1 + r.tree.depths()]
        masks.append(pack_bits(request_mask(c, r.tree), words))
        rows.append(offset + c - 1 + np.arange(len(r.tree) + 1))
        row_counts.append(len(r.tree) + 1)
        offset += t
    return StepInputs(
        input_ids=torch.from_numpy(np.concatenate(ids)),
        position_ids=torch.from_numpy(np.concatenate(pos).astype(np.int64)),
        qo_indptr=torch.tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.int32),
        kv_lens=torch.tensor([r.kv_len for r in requests], dtype=torch.int32),
        tree_mask=torch.from_numpy(np.concatenate(masks)),
        logit_rows=torch.from_numpy(np.concatenate(rows).astype(np.int64)),
        logit_indptr=torch.tensor(np.concatenate([[0], np.cumsum(row_counts)]), dtype=torch.int32),
    )
