"""Public model-free drafters as baselines behind our Drafter interface: HF's prompt lookup and SuffixDecoding.

`HFChainDrafter` reproduces transformers' `PromptLookupCandidateGenerator`: for
n = max_ngram .. 1, the leftmost earlier occurrence of the context's last n
tokens whose continuation is not empty gives a chain of up to 10 tokens.

>>> d = HFChainDrafter()
>>> d.start("r", [1, 2, 3, 4, 1, 2, 5, 9, 1, 2])
>>> d.propose("r", TreeBudget(32, 16)).paths()   # "1 2" first occurs at 0: draft what followed it
[[3, 4, 1, 2, 5, 9, 1, 2]]

`ArcticSuffixDrafter` wraps SuffixDecoding's `SuffixDecodingCache` (arctic-inference,
optional extra `arctic`): a suffix tree per prompt plus one over all responses.

>>> a = ArcticSuffixDrafter(tree=False)                # doctest: +SKIP
>>> a.start("r", [1, 2, 3, 4, 1, 2]); a.propose("r", TreeBudget(8, 8)).paths()   # doctest: +SKIP
[[3, 4]]
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .base import Drafter, RequestStates
from .tree import DraftTree, TreeBudget

ARCTIC_INSTALL = ("arctic-suffix needs arctic-inference==0.3.0 (the extra `arctic`, an sdist): pip install "
                  "nanobind==2.9.2 cmake ninja setuptools wheel protobuf==5.29.6 grpcio-tools numpy, then "
                  "PATH=$VIRTUAL_ENV/bin:$PATH pip install --no-build-isolation arctic-inference==0.3.0")


class HFChainDrafter(Drafter):
    """Hugging Face prompt lookup decoding, rule for rule (candidate_generator.py, transformers 5.x).

    num_output_tokens  chain length (HF's prompt_lookup_num_tokens, default 10)
    max_ngram          HF's max_matching_ngram_size (default 2)

    HF also cuts the chain before an end-of-sequence token; under greedy decoding
    that changes no forward count (the target then emits the EOS as its bonus
    token), so it is left out and the drafter needs no EOS ids.
    """

    name = "hf-chain"

    def __init__(self, num_output_tokens: int = 10, max_ngram: int = 2):
        if num_output_tokens <= 0 or max_ngram <= 0:
            raise ValueError("num_output_tokens and max_ngram must be > 0")
        self.num_output_tokens, self.max_ngram = num_output_tokens, max_ngram
        self._ctx: RequestStates = RequestStates()

    def start(self, request_id: str, prompt_ids: Sequence[int]) -> None:
        self._ctx.begin(request_id, list(prompt_ids))

    def propose(self, request_id: str, budget: TreeBudget) -> DraftTree:
        ctx = np.asarray(self._ctx[request_id], np.int64)
        n_ctx = len(ctx)
        for n in range(min(self.max_ngram, n_ctx - 1), 0, -1):
            # HF compares every window, the final one included; that one has an empty
            # continuation and is skipped, so only windows starting before n_ctx - n count.
            windows = np.lib.stride_tricks.sliding_window_view(ctx[: n_ctx - 1], n)
            hits = np.flatnonzero((windows == ctx[n_ctx - n :]).all(axis=1))
            if len(hits):
                start = int(hits[0]) + n
                size = min(self.num_output_tokens, budget.max_nodes, budget.max_depth)
                return DraftTree.chain(ctx[start : min(start + size, n_ctx)])
        return DraftTree.empty()

    def update(self, request_id: str, accepted_ids: Sequence[int]) -> None:
        self._ctx[request_id].extend(accepted_ids)

    def stop(self, request_id: str) -> None:
        self._ctx.end(request_id)


class ArcticSuffixDrafter(Drafter):
    """SuffixDecoding (ArcticInference 0.3.0) as a drafter; its defaults are vLLM's for arctic.

    tree             use_tree_spec: a tree of up to max_nodes nodes, else a chain of
                     up to min(max_nodes, max_depth) tokens
    max_tree_depth   suffix tree depth, also the context tail matched (arctic: 64)
    max_spec_factor  draft length <= factor × match length (arctic: 1.0)
    min_token_prob   stop drafting below this estimated path probability (arctic: 0.1)
    max_cached_requests  responses kept in the global tree (-1 = all)

    Arctic scores a node by its path probability; DraftTree wants it given the
    parent, so each score is divided by its parent's.
    """

    def __init__(self, tree: bool = True, max_tree_depth: int = 64, max_spec_factor: float = 1.0,
                 min_token_prob: float = 0.1, max_cached_requests: int = -1):
        try:
            from arctic_inference.suffix_decoding import SuffixDecodingCache
        except ImportError:
            raise ImportError(ARCTIC_INSTALL) from None
        self.name = "arctic-suffix" if tree else "arctic-suffix-chain"
        self.tree, self.max_spec_factor, self.min_token_prob = tree, max_spec_factor, min_token_prob
        self.max_tree_depth = max_tree_depth
        self.cache = SuffixDecodingCache(max_tree_depth=max_tree_depth, max_cached_requests=max_cached_requests)
        self._ctx: dict[str, list[int]] = {}

    def start(self, request_id: str, prompt_ids: Sequence[int]) -> None:
        self.cache.start_request(request_id, list(prompt_ids))
        self._ctx[request_id] = list(prompt_ids)

    def propose(self, request_id: str, budget: TreeBudget) -> DraftTree:
        limit = budget.max_nodes if self.tree else min(budget.max_nodes, budget.max_depth)
        if limit == 0 or budget.max_depth == 0:
            return DraftTree.empty()
        draft = self.cache.speculate(request_id, self._ctx[request_id][-self.max_tree_depth :],
                                     max_spec_tokens=limit, max_spec_factor=self.max_spec_factor,
                                     min_token_prob=self.min_token_prob, use_tree_spec=self.tree)
        if not draft.token_ids:
            return DraftTree.empty()
        parents = np.asarray(draft.parents, np.int32)
        path = np.asarray(draft.probs, np.float64)
        parent_path = np.where(parents >= 0, path[np.maximum(parents, 0)], 1.0)
        scores = np.clip(path / np.maximum(parent_path, 1e-30), 0.0, 1.0)
        return DraftTree(np.asarray(draft.token_ids, np.int64), parents, scores).prune(budget)

    def update(self, request_id: str, accepted_ids: Sequence[int]) -> None:
        self.cache.add_active_response(request_id, list(accepted_ids))
        self._ctx[request_id].extend(accepted_ids)

    def stop(self, request_id: str) -> None:
        if request_id in self._ctx:
            self.cache.stop_request(request_id)
            del self._ctx[request_id]
