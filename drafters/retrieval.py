"""Retrieval drafting (REST, SuffixDecoding's global cache): continuations from a shared datastore.

The store holds an external corpus plus the outputs of earlier requests. A
request drafts from whatever followed the longest suffix of its context there;
its own prompt need not contain the answer (prompt lookup covers that case).

>>> store = RetrievalStore()
>>> store.add([1, 2, 3, 4, 5])
>>> d = RetrievalDrafter(store)
>>> d.start("a", [9, 2, 3])          # "2 3" was seen before, followed by "4 5"
>>> d.propose("a", TreeBudget(8, 4)).paths()
[[4, 5]]
>>> d.update("a", [4, 7]); d.stop("a")   # the output "4 7" joins the store
>>> d.start("b", [0, 4]); d.propose("b", TreeBudget(8, 4)).paths()
[[5], [7]]
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from os import PathLike

import numpy as np

from .base import Drafter, RequestStates
from .corpus import CorpusError, read_documents
from .suffix_array import build_suffix_array, draft_tree
from .tree import DraftTree, TreeBudget

__all__ = ["RetrievalStore", "RetrievalDrafter", "CorpusError"]


class RetrievalStore:
    """Token documents indexed by truncated suffix arrays, in geometrically sized segments.

    All documents live in one append-only array (each followed by a -1
    separator). It is cut into segments, each with its own suffix array; a new
    batch of documents becomes a new segment, and the youngest segments are
    rebuilt as one while the older is less than twice the newer. So a 10M-token
    corpus is indexed once, adding a 200-token output re-sorts a few hundred
    tokens on average, and there are at most log2(tokens) segments to search.

    key_len: suffixes are sorted on this many tokens; match length + draft depth
        beyond it follows single occurrences only (see suffix_array).
    probes: a range of more occurrences than this is sampled to find its frequent
        continuations (children rarer than 1/probes of it may be missed).
    max_children: branching limit per node.
    """

    def __init__(self, key_len: int = 32, probes: int = 64, max_children: int = 8):
        if key_len < 2 or probes < 1 or max_children < 1:
            raise ValueError("key_len must be >= 2, probes and max_children >= 1")
        self.key_len, self.probes, self.max_children = key_len, probes, max_children
        self._text = np.empty(1024, np.int32)
        self._sa = np.empty(1024, np.int32)
        self._bounds = [0]  # segment s = [bounds[s], bounds[s+1])
        self.num_docs = 0

    @classmethod
    def from_files(
        cls, paths: Iterable[str | PathLike], tokenize: Callable[[str], list[int]], **kwargs
    ) -> "RetrievalStore":
        """A store of the documents in text/JSONL files (formats: see `corpus`).

        `tokenize` is the target model's tokenizer (text -> ids, no special tokens).
        Raises CorpusError for a missing, empty, binary or non-UTF-8 file or a bad
        JSONL line.
        """
        store = cls(**kwargs)
        docs = [tokenize(d) for d in read_documents(paths)]
        if not any(len(d) for d in docs):
            raise CorpusError("the corpus files tokenize to no tokens")
        store.extend(docs)
        return store

    def __len__(self) -> int:
        """Tokens stored, separators excluded."""
        return self._bounds[-1] - self.num_docs

    @property
    def num_segments(self) -> int:
        return len(self._bounds) - 1

    def add(self, token_ids: Sequence[int]) -> None:
        """Add one document."""
        self.extend([token_ids])

    def extend(self, documents: Iterable[Sequence[int]]) -> None:
        """Add documents as one new segment (one sort for a whole corpus)."""
        parts = []
        for doc in documents:
            ids = np.asarray(doc, dtype=np.int64)
            if ids.size == 0:
                continue
            if ids.ndim != 1 or ids.min() < 0 or ids.max() >= 2**31 - 1:
                raise ValueError("a document must be a 1-D list of token ids in [0, 2**31 - 1)")
            parts += [ids.astype(np.int32), np.array([-1], np.int32)]
        if not parts:
            return
        self.num_docs += len(parts) // 2
        new = np.concatenate(parts)
        start = self._bounds[-1]
        self._reserve(start + len(new))
        self._text[start : start + len(new)] = new
        self._bounds.append(start + len(new))
        b = self._bounds
        while len(b) > 2 and b[-2] - b[-3] < 2 * (b[-1] - b[-2]):
            del b[-2]  # merge the two youngest segments
        lo, hi = b[-2], b[-1]
        self._sa[lo:hi] = build_suffix_array(self._text[lo:hi], self.key_len) + lo

    def draft(self, context: Sequence[int], budget: TreeBudget, max_match: int = 16) -> tuple[DraftTree, int]:
        """Tree of what followed the longest suffix of `context` (up to max_match tokens).

        Returns the tree and the matched length (0: nothing matched, empty tree).
        """
        ctx = np.asarray(context[-max_match:] if max_match > 0 else [], dtype=np.int32)
        n = self._bounds[-1]
        if len(ctx) == 0 or n == 0 or budget.max_nodes == 0 or budget.max_depth == 0:
            return DraftTree.empty(), 0
        tokens, parents, scores, m = draft_tree(
            self._text[:n], self._sa[:n], np.asarray(self._bounds, np.int64), ctx, max_match,
            self.key_len, budget.max_nodes, budget.max_depth, self.probes, self.max_children,
        )
        return DraftTree.unchecked(tokens, parents, scores), int(m)

    def _reserve(self, n: int) -> None:
        if n > len(self._text):
            cap = max(n, 2 * len(self._text))
            for name in ("_text", "_sa"):
                old = getattr(self, name)
                grown = np.empty(cap, np.int32)
                grown[: len(old)] = old
                setattr(self, name, grown)


class RetrievalDrafter(Drafter):
    """Drafts from a RetrievalStore shared by all requests; adds each output at stop().

    max_match: longest context suffix looked up (longer = more specific, rarer).
    learn: add finished outputs to the store (SuffixDecoding's past responses).
    """

    name = "retrieval"

    def __init__(self, store: RetrievalStore | None = None, max_match: int = 16, learn: bool = True):
        self.store = RetrievalStore() if store is None else store  # None: past outputs only
        self.max_match, self.learn = max_match, learn
        self._context: RequestStates = RequestStates()  # request id -> prompt + output so far
        self._prompt_len: dict[str, int] = {}

    def start(self, request_id: str, prompt_ids: Sequence[int]) -> None:
        self._context.begin(request_id, [int(t) for t in prompt_ids])
        self._prompt_len[request_id] = len(prompt_ids)

    def propose(self, request_id: str, budget: TreeBudget) -> DraftTree:
        return self.store.draft(self._context[request_id], budget, self.max_match)[0]

    def update(self, request_id: str, accepted_ids: Sequence[int]) -> None:
        self._context[request_id].extend(int(t) for t in accepted_ids)

    def stop(self, request_id: str) -> None:
        output = self._context.end(request_id)[self._prompt_len.pop(request_id) :]
        if self.learn and output:
            self.store.add(output)
