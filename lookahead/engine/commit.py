"""Commit: copy each request's chain and accepted nodes' KV from the step's scratch into its cache."""
from __future__ import annotations

import numpy as np
import torch

from lookahead.engine.kv_cache import PagedKVCache
from lookahead.engine.step import StepItem, Verified


def commit(cache: PagedKVCache, items: list[StepItem], verified: Verified) -> None:
    """Write, in path order, to the slots after each request's kv_len (which no attention reads until
    update moves kv_len). The source is the scratch buffer, never the cache itself, so the
    gather-then-write cannot read a slot it has already overwritten."""
    src, blocks, offsets = [], [], []
    starts = verified.inputs.qo_indptr.tolist()
    for b, it in enumerate(items):
        req = it.request
        if req.error is not None:
            continue
        c = len(it.chain)
        nodes = it.result.nodes if it.result is not None else []
        rows = starts[b] + np.concatenate([np.arange(c), c + np.asarray(nodes, np.int64)]).astype(np.int64)
        blk, off = cache.slots(req.id, torch.arange(req.kv_len, req.kv_len + len(rows)))
        src.append(torch.from_numpy(rows))
        blocks.append(blk)
        offsets.append(off)
    if src:
        idx = torch.cat(src).to(cache.k.device)
        cache.write(torch.cat(blocks), torch.cat(offsets), verified.scratch_k[:, idx], verified.scratch_v[:, idx])
