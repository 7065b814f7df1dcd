"""The decoding loop, written as the stages of one step: propose → prune → verify → accept → commit → update.

Plain decoding is the same loop with empty trees. Requests join and leave between
steps; all their new tokens go through the target in one flattened forward.

Running out of GPU memory retries the step with less (`MemoryBackoff`): smaller trees, then
fewer requests; a request fails alone only when it does not fit even by itself, undrafted.

>>> from lookahead.engine import Engine, EngineConfig
>>> # engine = Engine(model, tokenizer, drafter=PromptLookupDrafter(), config=EngineConfig())
>>> # engine.add("r1", prompt_ids); while engine.has_work(): finished = engine.step()
"""
from __future__ import annotations

import gc
import time
import zlib
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch

from lookahead.drafters import Drafter, DraftTree, TreeBudget
from lookahead.engine.acceptance import Acceptance, accept_greedy, accept_sampling
from lookahead.engine.tree_inputs import RequestSlice, build_step_inputs

from lookahead.engine.attention import StepAttention, attention_for_steps
from lookahead.engine.config import EngineConfig, RequestError, SamplingParams
from lookahead.engine.controller import GoodputController
from lookahead.engine.cost_model import StepCostModel, prior_for
from lookahead.engine.cpu_linear import invariant_rows, linear_layers
from lookahead.engine.kv_cache import PagedKVCache


@dataclass
class Request:
    id: str
    prompt_ids: list[int]
    params: SamplingParams
    tokens: list[int] = field(default_factory=list)  # prompt + output so far
    kv_len: int = 0  # positions of `tokens` whose KV is cached
    forwards: int = 0  # target passes that produced tokens for this request
    drafted: int = 0  # draft nodes verified
    accepted: int = 0  # draft nodes accepted
    arrived: float = 0.0
    first_token_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    rng: np.random.Generator | None = None
    source_ids: list[int] | None = None  # text a rewriting request copies from (for source-aware drafters)

    @property
    def output_ids(self) -> list[int]:
        return self.tokens[len(self.prompt_ids) :]

    @property
    def done(self) -> bool:
        return self.finished_at is not None


@dataclass
class StepItem:
    """One request's part of a step, from propose to update."""

    request: Request
    chain: list[int]  # [c] its committed tokens that still need their KV (a prefill chunk or the bonus token)
    tree: DraftTree  # its draft tree, pruned by the controller (and the memory back-off)
    result: Acceptance | None = None  # accepted nodes and new tokens; None for a prefill chunk

    @property
    def slice(self) -> RequestSlice:
        return RequestSlice(self.chain, self.request.kv_len, self.tree)


@dataclass
class StepStats:
    requests: int
    query_tokens: int
    kv_tokens: int
    draft_nodes: int
    seconds: float
    oom_retries: int = 0  # attempts of this step that ran out of GPU memory before this one fit
    propose_seconds: float = 0.0  # wall time of the drafter's proposals (real time, whatever the engine's clock)


@dataclass
class MemoryBackoff:
    """How much one step may verify after running out of GPU memory, and how that grows back.

    An out-of-memory step is retried smaller: first the draft nodes per request are halved
    (from the largest tree in the step), down to none (plain decoding); then the batch is
    halved (the requests left out go first next step). The limit that fitted is kept, so a
    load that does not fit is not paid for with a failed forward every step: after
    `grow_after` successful steps in a row the limit doubles, batch first, then nodes. A
    load that never fits thus costs one failed forward per `grow_after` steps (about 6 %).
    """

    max_nodes: int  # the configured limits, which the backoff grows back to
    max_batch: int
    grow_after: int = 16
    nodes: int = field(init=False)  # draft nodes per request at most, now
    batch: int = field(init=False)  # requests per forward at most, now
    streak: int = field(init=False, default=0)  # successful steps since the limit last changed

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


class Engine:
    def __init__(self, model, tokenizer=None, drafter: Drafter | None = None, config: EngineConfig | None = None,
                 eos_token_ids: list[int] | None = None, clock=time.perf_counter):
        self.model = model
        self.tokenizer = tokenizer
        self.drafter = drafter
        self.config = config or EngineConfig()
        # Every row computed as if alone (cpu_linear.py): the class of these layers is switched for the
        # engine's own forwards only, so the user's model stays as it was between steps.
        self._linears = linear_layers(model)
        self.clock = clock
        self.device = next(model.parameters()).device
        cfg = model.config
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.max_positions = getattr(cfg, "max_position_embeddings", 1 << 30)
        self.vocab_size = getattr(model.get_input_embeddings(), "num_embeddings", None)
        self.cache = PagedKVCache(
            layers=cfg.num_hidden_layers,
            kv_heads=cfg.num_key_value_heads,
            head_dim=head_dim,
            blocks=-(-self.config.kv_cache_tokens // self.config.block_size),
            block_size=self.config.block_size,
            dtype=next(model.parameters()).dtype,
            device=self.device,
        )
        self.eos = set(eos_token_ids if eos_token_ids is not None else default_eos(model, tokenizer))
        budget = TreeBudget(self.config.max_nodes, self.config.max_depth)
        cost_model = StepCostModel(prior_for(self.device, self.cache.k.dtype, self.config.exact))
        self.controller = GoodputController(self.config.controller, cost_model, fixed_budget=budget, max_budget=budget)
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.step_log: list[StepStats] = []
        self.memory = MemoryBackoff(self.config.max_nodes, self.config.max_batch_size)
        self.oom_retries = 0  # step attempts that ran out of GPU memory, over the engine's life

    # ---- request lifecycle ----------------------------------------------------------------------
    def add(self, request_id: str, prompt_ids: list[int], params: SamplingParams | None = None,
            source_ids: list[int] | None = None) -> Request:
        params = params or SamplingParams()
        req = Request(request_id, list(prompt_ids), params, tokens=list(prompt_ids), arrived=self.clock(),
                      rng=np.random.default_rng([params.seed, zlib.crc32(request_id.encode())]),
                      source_ids=source_ids)
        if not prompt_ids:
            raise RequestError(f"request {request_id}: empty prompt")
        need = len(prompt_ids) + params.max_new_tokens + self.config.max_depth + 1
        if len(prompt_ids) + params.max_new_tokens > self.max_positions:
            raise RequestError(
                f"request {request_id}: prompt ({len(prompt_ids)} tokens) + max_new_tokens "
                f"({params.max_new_tokens}) exceeds the model's context of {self.max_positions}"
            )
        if need > self.config.kv_cache_tokens:
            raise RequestError(f"request {request_id}: needs {need} KV positions, the cache holds "
                               f"{self.config.kv_cache_tokens} (raise kv_cache_tokens)")
        self.waiting.append(req)
        return req

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def _admit(self) -> None:
        while self.waiting and len(self.running) < self.config.max_batch_size:
            req = self.waiting[0]
            need = len(req.prompt_ids) + req.params.max_new_tokens + self.config.max_depth + 1
            if -(-need // self.cache.block_size) > self.cache.free_blocks():
                break  # wait for a running request to finish and free its blocks
            self.waiting.popleft()
            self.cache.reserve(req.id, need)  # all at admission: a running request never runs out
            self.running.append(req)
            if self.drafter is not None:
                self._guard(req, lambda: self._start_drafting(req))

    def _start_drafting(self, req: Request) -> None:
        self.drafter.start(req.id, req.prompt_ids)
        if req.source_ids is not None:
            self.drafter.set_source(req.id, req.source_ids)

    def _finish(self, req: Request, error: str | None = None) -> None:
        req.error = req.error or error
        req.finished_at = self.clock()
        self.cache.release(req.id)
        if self.drafter is not None:
            try:
                self.drafter.stop(req.id)
            except Exception:  # a drafter failing to forget must not hide the result
                pass

    def _guard(self, req: Request, fn):
        """Run one request's stage; an exception fails that request alone."""
        try:
            return fn()
        except torch.OutOfMemoryError:
            raise  # memory is the whole step's problem, not this request's: the step retries smaller
        except Exception as e:  # isolation: the batch goes on without it
            req.error = f"{type(e).__name__}: {e}"
            return None

    # ---- one step ----------------------------------------------------------------------------------
    def step(self) -> list[Request]:
        """Advance every running request by one target pass; returns the requests that finished."""
        self._admit()
        ready = [r for r in self.running if r.error is None]
        finished = [r for r in self.running if r.error is not None]
        batch = ready[: self.memory.batch]
        if batch:
            start = time.perf_counter()
            trees = [self._propose(r) for r in batch]
            propose_seconds = time.perf_counter() - start
            chains = [self._chain(r) for r in batch]
            trees = self.controller.select(trees, [len(c) for c in chains], [r.kv_len for r in batch])
            items, stats = self._verify_within_memory([StepItem(r, c, t) for r, c, t in zip(batch, chains, trees)])
            if stats is not None:  # the step ran: log it and learn from it
                stats.propose_seconds = propose_seconds
                self.step_log.append(stats)
                self.controller.observe(stats.requests, stats.query_tokens, stats.draft_nodes, stats.kv_tokens,
                                        stats.seconds)
            self._update(items)
            finished += [it.request for it in items if it.request.error is not None or self._complete(it.request)]
            if len(items) < len(ready):  # a memory-limited batch: who waited goes first next step
                verified = {id(it.request) for it in items}
                self.running.sort(key=lambda r: id(r) in verified)
        for r in finished:
            self._finish(r)
        self.running = [r for r in self.running if not r.done]
        return finished

    def _verify_within_memory(self, items: list[StepItem]) -> tuple[list[StepItem], StepStats | None]:
        """Verify, accept and commit, retried with less each time the GPU runs out of memory.

        An attempt leaves no trace: the forward writes only its scratch buffers, and commit
        writes only cache slots past each request's kv_len, which no attention reads until
        `_update` moves kv_len. So a retry starts clean, prefill chunks included, and gives
        the same greedy tokens (sampled ones from the same distribution: a failed attempt's
        draws are just discarded). Returns the items verified (a prefix of `items`, their
        results set) and the step's stats; or one item whose request fits in no way (its error
        set) and None.
        """
        retries = 0
        while True:
            try:
                stats = self._attempt(items)
                break
            except torch.OutOfMemoryError:
                pass  # out of the except block first: its traceback holds the attempt's tensors
            self._free_memory()
            retries += 1
            self.oom_retries += 1
            largest = max(len(it.tree) for it in items)
            if largest == 0 and len(items) == 1:
                req = items[0].request
                req.error = (f"request {req.id}: out of GPU memory even with no draft tree and batch 1 "
                             f"({len(items[0].chain)} new tokens on {req.kv_len} cached)")
                return items, None
            self.memory.shrink(largest, len(items))
            budget = TreeBudget(self.memory.nodes, self.config.max_depth)
            items = [StepItem(it.request, it.chain, it.tree.prune(budget)) for it in items[: self.memory.batch]]
        stats.oom_retries = retries
        self.memory.succeeded()
        return items, stats

    def _attempt(self, items: list[StepItem]) -> StepStats:
        """One try at verify → accept → commit (setting each item's result); the stats time the
        forward and acceptance only."""
        start = self.clock()
        slices = [it.slice for it in items]
        logits, scratch_k, scratch_v, inputs = self._verify([it.request for it in items], slices)
        results = self._accept(items, logits, inputs)  # its .cpu() waits for the forward
        stats = StepStats(len(items), int(inputs.input_ids.numel()), int(inputs.kv_lens.sum()),
                          sum(len(s.tree) for s in slices), self.clock() - start)
        for it, res in zip(items, results):
            it.result = res
        self._commit(items, inputs, scratch_k, scratch_v)
        return stats

    def _free_memory(self) -> None:
        """Hand a failed attempt's scratch and activations back before the retry allocates anew."""
        gc.collect()  # frames of the failed forward may sit in reference cycles
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _budget(self, req: Request) -> TreeBudget:
        left = req.params.max_new_tokens - len(req.output_ids)
        nodes = self.memory.nodes  # the configured max_nodes, or less if memory ran out lately
        return TreeBudget(nodes, max(0, min(self.config.max_depth, left - 1)))

    def _propose(self, req: Request) -> DraftTree:
        prefilling = len(req.tokens) - req.kv_len > 1
        if self.drafter is None or prefilling or self.config.controller == "off":
            return DraftTree.empty()
        budget = self._budget(req)
        tree = self._guard(req, lambda: self._in_vocab(self.drafter.propose(req.id, budget).prune(budget)))
        return tree if tree is not None else DraftTree.empty()

    def _in_vocab(self, tree: DraftTree) -> DraftTree:
        """A drafted id past the embedding table would crash the whole batch's forward: fail its request here."""
        if len(tree) and self.vocab_size is not None and int(tree.tokens.max()) >= self.vocab_size:
            raise RequestError(f"drafter proposed token id {int(tree.tokens.max())}, outside the vocabulary "
                               f"of {self.vocab_size}")
        return tree

    def _chain(self, req: Request) -> list[int]:
        """The request's committed tokens that still need their KV (a prefill chunk, or the bonus token)."""
        return req.tokens[req.kv_len : req.kv_len + self.config.prefill_chunk]

    def _verify(self, batch, slices):
        inputs = build_step_inputs(slices).to(self.device)
        cfg = self.model.config
        tables = [self.cache.blocks_of(r.id) for r in batch]
        width = max(len(t) for t in tables)
        block_table = torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.int32,
                                   device=self.device)
        n = inputs.input_ids.numel()
        scratch_shape = (cfg.num_hidden_layers, n, *self.cache.k.shape[3:])
        step = StepAttention(
            cache=self.cache, block_table=block_table, kv_lens=inputs.kv_lens, qo_indptr=inputs.qo_indptr,
            tree_mask=inputs.tree_mask, positions=inputs.position_ids, exact=self.config.exact,
            request_ids=[r.id for r in batch],
            scratch_k=torch.empty(scratch_shape, dtype=self.cache.k.dtype, device=self.device),
            scratch_v=torch.empty(scratch_shape, dtype=self.cache.v.dtype, device=self.device),
        )
        with attention_for_steps(self.model), invariant_rows(self._linears, on=self.config.exact), \
                torch.inference_mode():
            out = self.model(input_ids=inputs.input_ids[None], position_ids=inputs.position_ids[None],
                             lookahead_step=step, use_cache=False, logits_to_keep=inputs.logit_rows)
        return out.logits[0].float(), step.scratch_k, step.scratch_v, inputs

    def _accept(self, items: list[StepItem], logits, inputs) -> list[Acceptance | None]:
        targets = logits.argmax(-1).cpu().numpy()
        indptr = inputs.logit_indptr.tolist()
        results = []
        for b, it in enumerate(items):
            req, tree = it.request, it.tree
            if req.kv_len + len(it.chain) < len(req.tokens):  # a prefill chunk: nothing to decide yet
                results.append(None)
                continue
            lo, hi = indptr[b], indptr[b + 1]
            if req.params.temperature == 0:
                fn = lambda: accept_greedy(tree, targets[lo:hi])  # noqa: E731
            else:
                fn = lambda: accept_sampling(tree, logits[lo:hi], req.params.temperature,  # noqa: E731
                                             req.params.top_p, req.rng)
            results.append(self._guard(req, fn))
        return results

    def _commit(self, items: list[StepItem], inputs, scratch_k, scratch_v) -> None:
        """Copy the chain's and the accepted nodes' KV into each cache, in path order.

        The source is the step's scratch buffer, never the cache itself, so the
        gather-then-write cannot read a slot it has already overwritten.
        """
        src, blocks, offsets = [], [], []
        starts = inputs.qo_indptr.tolist()
        for b, it in enumerate(items):
            req = it.request
            if req.error is not None:
                continue
            c = len(it.chain)
            nodes = it.result.nodes if it.result is not None else []
            rows = starts[b] + np.concatenate([np.arange(c), c + np.asarray(nodes, np.int64)]).astype(np.int64)
            positions = torch.arange(req.kv_len, req.kv_len + len(rows))
            blk, off = self.cache.slots(req.id, positions)
            src.append(torch.from_numpy(rows))
            blocks.append(blk)
            offsets.append(off)
        if src:
            idx = torch.cat(src).to(self.device)
            self.cache.write(torch.cat(blocks), torch.cat(offsets), scratch_k[:, idx], scratch_v[:, idx])

    def _update(self, items: list[StepItem]) -> None:
        now = self.clock()
        for it in items:
            req, res = it.request, it.result
            if req.error is not None:
                continue
            req.kv_len += len(it.chain)
            if res is None:
                continue
            req.kv_len += len(res.nodes)
            new = self._truncate(req, res.tokens)
            req.tokens += new
            req.forwards += 1
            req.drafted += len(it.tree)
            req.accepted += len(res.nodes)
            req.first_token_at = req.first_token_at or now
            if self.drafter is not None:
                self._guard(req, lambda: self.drafter.update(req.id, new))

    def _truncate(self, req: Request, tokens: list[int]) -> list[int]:
        """Cut at the first end-of-sequence token (kept) and at max_new_tokens."""
        left = req.params.max_new_tokens - len(req.output_ids)
        out = []
        for t in tokens[:left]:
            out.append(t)
            if t in self.eos:
                break
        return out

    def _complete(self, req: Request) -> bool:
        out = req.output_ids
        return len(out) >= req.params.max_new_tokens or (bool(out) and out[-1] in self.eos)

    # ---- convenience ------------------------------------------------------------------------------------
    def run(self, prompts: dict[str, list[int]], params: SamplingParams | None = None) -> dict[str, Request]:
        """Decode every prompt to completion; returns the requests by id."""
        reqs = {rid: self.add(rid, ids, params) for rid, ids in prompts.items()}
        while self.has_work():
            self.step()
        return reqs


def default_eos(model, tokenizer) -> list[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None and tokenizer is not None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return []
    return list(eos) if isinstance(eos, (list, tuple)) else [int(eos)]
