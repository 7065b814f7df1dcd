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

import time
import zlib
from collections import deque
from dataclasses import replace

import numpy as np

from lookahead.drafters import Drafter, DraftTree, TreeBudget
from lookahead.engine.accept import accept
from lookahead.engine.commit import commit
from lookahead.engine.config import EngineConfig, RequestError, SamplingParams
from lookahead.engine.controller import GoodputController
from lookahead.engine.cost_model import StepCostModel, prior_for
from lookahead.engine.cpu_linear import linear_layers
from lookahead.engine.kv_cache import PagedKVCache
from lookahead.engine.memory import MemoryBackoff
from lookahead.engine.propose import budget_for, chain_of, propose
from lookahead.engine.request import Request, isolated
from lookahead.engine.step import StepItem, StepStats
from lookahead.engine.update import complete, update
from lookahead.engine.verify import verify


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
        self.record_successors = 0  # k > 0: every request keeps the target's k likeliest tokens per output token

    # ---- request lifecycle ----------------------------------------------------------------------
    def add(self, request_id: str, prompt_ids: list[int], params: SamplingParams | None = None,
            source_ids: list[int] | None = None) -> Request:
        params = params or SamplingParams()
        if len(prompt_ids) >= self.max_positions:
            raise RequestError(f"request {request_id}: prompt ({len(prompt_ids)} tokens) fills the model's context "
                               f"of {self.max_positions} (truncate_prompt keeps its end)")
        if len(prompt_ids) + params.max_new_tokens > self.max_positions:  # it stops at the context's end
            params = replace(params, max_new_tokens=self.max_positions - len(prompt_ids))
        req = Request(request_id, list(prompt_ids), params, tokens=list(prompt_ids), arrived=self.clock(),
                      rng=np.random.default_rng([params.seed, zlib.crc32(request_id.encode())]),
                      source_ids=source_ids)
        if not prompt_ids:
            raise RequestError(f"request {request_id}: empty prompt")
        need = self.positions_needed(len(prompt_ids), params.max_new_tokens)
        if need > self.config.kv_cache_tokens:
            raise RequestError(f"request {request_id}: needs {need} KV positions, the cache holds "
                               f"{self.config.kv_cache_tokens} (raise kv_cache_tokens)")
        self.waiting.append(req)
        return req

    def positions_needed(self, prompt_tokens: int, max_new_tokens: int) -> int:
        """KV positions a request reserves: its prompt, its output and the deepest tree past them."""
        return prompt_tokens + max_new_tokens + self.config.max_depth + 1

    def prompt_room(self, max_new_tokens: int) -> int:
        """The longest prompt that leaves room for max_new_tokens in the context and the KV cache (at least 1)."""
        limit = min(self.max_positions, self.config.kv_cache_tokens - self.config.max_depth - 1)
        return max(1, limit - max_new_tokens)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def _admit(self) -> None:
        while self.waiting and len(self.running) < self.config.max_batch_size:
            req = self.waiting[0]
            need = self.positions_needed(len(req.prompt_ids), req.params.max_new_tokens)
            if -(-need // self.cache.block_size) > self.cache.free_blocks():
                break  # wait for a running request to finish and free its blocks
            self.waiting.popleft()
            self.cache.reserve(req.id, need)  # all at admission: a running request never runs out
            self.running.append(req)
            if self.drafter is not None:
                isolated(req, lambda: self._start_drafting(req))

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

    def cancel(self, request_id: str) -> bool:
        """Drop a waiting or running request between steps, freeing its KV blocks and drafter state at once
        (a client that went away). Returns whether there was such a request."""
        for req in list(self.waiting):
            if req.id == request_id:
                self.waiting.remove(req)
                req.error, req.finished_at = "cancelled", self.clock()
                return True
        for req in self.running:
            if req.id == request_id:
                self._finish(req, "cancelled")
                self.running.remove(req)
                return True
        return False

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
            chains = [chain_of(r, self.config.prefill_chunk) for r in batch]
            trees = self.controller.select(trees, [len(c) for c in chains], [r.kv_len for r in batch])  # prune
            items = [StepItem(r, c, t) for r, c, t in zip(batch, chains, trees)]
            items, stats = self.memory.run(self._attempt, items, self.config.max_depth)
            if stats is not None:  # the step ran: log it and learn from it
                stats.propose_seconds = propose_seconds
                self.step_log.append(stats)
                self.controller.observe(stats.requests, stats.query_tokens, stats.draft_nodes, stats.kv_tokens,
                                        stats.seconds)
            update(items, self.eos, self.drafter, self.clock(), self.tokenizer)
            finished += [it.request for it in items if it.request.error is not None or complete(it.request, self.eos)]
            if len(items) < len(ready):  # a memory-limited batch: who waited goes first next step
                verified = {id(it.request) for it in items}
                self.running.sort(key=lambda r: id(r) in verified)
        for r in finished:
            self._finish(r)
        self.running = [r for r in self.running if not r.done]
        return finished

    def _propose(self, req: Request):
        if self.drafter is None or self.config.controller == "off":
            return DraftTree.empty()
        # memory.nodes: the configured max_nodes, or less if memory ran out lately
        return propose(self.drafter, req, budget_for(req, self.memory.nodes, self.config.max_depth), self.vocab_size)

    def _attempt(self, items: list[StepItem]) -> StepStats:
        """One try at verify → accept → commit (setting each item's result); the stats time the
        forward and acceptance only."""
        start = self.clock()
        verified = verify(self.model, self.cache, items, self._linears, self.config.exact)
        accept(items, verified, self.successors_k)
        inputs = verified.inputs
        stats = StepStats(len(items), int(inputs.input_ids.numel()), int(inputs.kv_lens.sum()),
                          sum(len(it.tree) for it in items), self.clock() - start)
        commit(self.cache, items, verified)
        return stats

    @property
    def successors_k(self) -> int:
        """How many of the target's likeliest tokens to keep per committed position: what the drafter asks
        for, or `record_successors` (a trace being written), whichever is more."""
        wanted = self.drafter.successors_wanted if self.drafter is not None else 0
        return max(wanted, self.record_successors)

    @property
    def oom_retries(self) -> int:
        """Step attempts that ran out of GPU memory, over the engine's life."""
        return self.memory.failed_attempts

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
