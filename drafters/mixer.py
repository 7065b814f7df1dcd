"""Several drafters as one: their trees merge into a trie, pruned to the budget.

Same token under the same parent is one node; its score combines the sources as
1 - prod(1 - w_k * s_k) (DraftTree.merge). Members should be calibrated so that
their scores are comparable; `make_drafter` maps the CLI's drafter names to
drafters, calibrated by default.

>>> from lookahead.drafters import PromptLookupDrafter, SuffixAutomatonDrafter
>>> d = MixerDrafter([PromptLookupDrafter(max_ngram=2), SuffixAutomatonDrafter()])
>>> d.start("r", [1, 2, 3, 4, 1, 2])
>>> d.propose("r", TreeBudget(8, 4)).paths()
[[3, 4, 1, 2]]
>>> make_drafter("none") is None, make_drafter("suffix").name
(True, 'suffix')
"""
from __future__ import annotations

from collections.abc import Sequence

from lookahead.engine.config import DRAFTERS

from .base import Drafter
from .calibration import Calibrated
from .tree import DraftTree, TreeBudget


class MixerDrafter(Drafter):
    """Broadcasts the lifecycle to every member; propose merges their trees.

    weights  one factor in [0, 1] per member applied to its scores (default 1)
    """

    name = "mixer"

    def __init__(self, drafters: Sequence[Drafter], weights: Sequence[float] | None = None):
        if not drafters:
            raise ValueError("MixerDrafter needs at least one drafter")
        if weights is not None and len(weights) != len(drafters):
            raise ValueError(f"got {len(weights)} weights for {len(drafters)} drafters")
        self.drafters = list(drafters)
        self.weights = None if weights is None else [float(w) for w in weights]
        self.successors_wanted = max(d.successors_wanted for d in self.drafters)

    def start(self, request_id: str, prompt_ids: Sequence[int]) -> None:
        for d in self.drafters:
            d.start(request_id, prompt_ids)

    def propose(self, request_id: str, budget: TreeBudget) -> DraftTree:
        trees, weights = [], []
        for k, d in enumerate(self.drafters):
            t = d.propose(request_id, budget)
            if len(t):
                trees.append(t)
                weights.append(1.0 if self.weights is None else self.weights[k])
        if not trees:
            return DraftTree.empty()
        if len(trees) == 1 and weights[0] == 1.0:  # already within budget
            return trees[0]
        return DraftTree.merge(trees, weights).prune(budget)

    def update(self, request_id: str, accepted_ids: Sequence[int]) -> None:
        for d in self.drafters:
            d.update(request_id, accepted_ids)

    def stop(self, request_id: str) -> None:
        for d in self.drafters:
            d.stop(request_id)

    def observe_successors(self, request_id: str, successors) -> None:
        for d in self.drafters:
            if d.successors_wanted:
                d.observe_successors(request_id, successors[:, : d.successors_wanted])

    def set_source(self, request_id: str, source_ids: Sequence[int]) -> None:
        for d in self.drafters:
            d.set_source(request_id, source_ids)

    def stats(self) -> dict[str, list[dict]]:
        """Per-depth acceptance of every calibrated member, by member name."""
        return {d.name: d.stats() for d in self.drafters if hasattr(d, "stats")}




def _single(name: str, store, kw) -> Drafter:
    if name == "prompt-lookup":
        from .prompt_lookup import PromptLookupDrafter

        return PromptLookupDrafter(**kw)
    if name == "suffix":
        from .suffix_automaton import SuffixAutomatonDrafter

        return SuffixAutomatonDrafter(**kw)
    if name == "recycling":
        from .recycling import TokenRecyclingDrafter

        return TokenRecyclingDrafter(**kw)
    if name == "retrieval":
        from .retrieval import RetrievalDrafter

        return RetrievalDrafter(store, **kw) if store is not None else RetrievalDrafter(**kw)
    from .source_aligned import SourceAlignedDrafter

    return SourceAlignedDrafter(**kw)


def make_drafter(name: str, *, store=None, task: str | None = None, calibrate: bool = True, **kw) -> Drafter | None:
    """The drafter a CLI name stands for; None for plain decoding.

    store      a retrieval datastore ("retrieval"; "auto" adds retrieval when given)
    task       "auto" adds the source-aligned drafter when task == "gec"
    calibrate  wrap drafters in Calibrated (the mixer's members and the mixture itself)
    kw         constructor options of the named single drafter
    """
    if name not in DRAFTERS:
        raise ValueError(f"unknown drafter {name!r}; valid names: {', '.join(DRAFTERS)}")
    if name == "none":
        return None
    wrap = Calibrated if calibrate else (lambda d: d)
    if name != "auto":
        return wrap(_single(name, store, kw))
    if kw:
        raise ValueError(f"drafter 'auto' takes no drafter options, got {', '.join(kw)}")
    # Token recycling adds 2.5 % (gec) and 3.1 % (rag) to auto's replay τ at 64 nodes on the tuning halves
    # of the bundled traces (bench_replay --half tune --max-depth 32).
    members = ["prompt-lookup", "suffix", "recycling"]
    members += ["retrieval"] if store is not None else []
    members += ["source"] if task == "gec" else []
    return wrap(MixerDrafter([wrap(_single(m, store, {})) for m in members]))
