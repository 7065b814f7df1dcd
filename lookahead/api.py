"""The Python API: one object that holds the model, the drafters and the engine.

>>> from lookahead import Lookahead
>>> lm = Lookahead()                                   # doctest: +SKIP
>>> [r] = lm.generate(["Repeat exactly: the quick brown fox."], max_new_tokens=16)  # doctest: +SKIP
>>> r.text, r.tau                                      # doctest: +SKIP
('The quick brown fox.', 3.2)

The default is the bundled SmolLM2 on the CPU in the dtype `auto` picks (bf16 where the CPU has
native bf16, else fp32), with the `auto` drafter (a mixer of prompt lookup, the suffix automaton,
token recycling and retrieval over past outputs) and the goodput controller.
"""
from __future__ import annotations

import time
from collections.abc import Iterator

from lookahead.drafters.mixer import make_drafter

from lookahead.engine import Engine, EngineConfig, Request, RequestError, SamplingParams
from lookahead.result import Chunk, Result, failed_result
from lookahead.run.requests_io import InputError, RequestSpec, empty_prompt, encode_prompt, spec_from_dict
from lookahead.run.startup import mark


class Lookahead:
    """Speculative decoding without a draft model.

    model: None (the bundled SmolLM2), a model folder or .gguf path, or a transformers
    model already loaded, in eval mode (then pass its `tokenizer` too). A model passed in is
    left as it was: the engine switches its attention to ours, and its linear layers to the
    tree-invariant ones, during its own forwards only.
    store: a retrieval datastore built elsewhere (a Ray worker's shared one); it
        replaces the one `corpus` and `documents` would build.
    """

    def __init__(self, model=None, tokenizer=None, *, drafter: str = "auto", dtype: str = "auto",
                 device: str = "auto", config: EngineConfig | None = None, corpus: list[str] | None = None,
                 task: str | None = None, documents: list[str] | None = None, store=None):
        from lookahead.models import load_model

        if model is None or isinstance(model, str):
            loaded = load_model(model, dtype=dtype, device=device)
            mark("model")
            self.model, self.tokenizer, self.model_name = loaded.model, loaded.tokenizer, loaded.name
        else:
            if tokenizer is None:
                raise ValueError("pass the tokenizer together with a loaded model")
            if model.training:
                raise ValueError("the model is in training mode (dropout would change its choices): "
                                 "call model.eval() first")
            self.model, self.tokenizer, self.model_name = model, tokenizer, type(model).__name__
        self.drafter_name = drafter
        self.drafter = (build_drafter(drafter, self.tokenizer, corpus, task, documents) if store is None
                        else make_drafter(drafter, store=store, task=task))
        self.engine = Engine(self.model, self.tokenizer, self.drafter, config or EngineConfig())
        self._sent: dict[str, tuple[int, int]] = {}  # request in flight -> (tokens, characters) yielded so far

    def results(self, prompts, speculate: bool = True, truncate_prompt: bool = False, **sampling) -> Iterator[Result]:
        """Yield each request's Result as it finishes (continuous batching).

        prompts: one prompt (a str is one user message) or a list of them (str, chat message
        list, or request dict). sampling: SamplingParams' fields (max_new_tokens, temperature,
        top_p, top_k, min_p, seed, stop, logprobs), which a request dict may override.
        speculate=False decodes plainly (no drafter), the baseline of a measured speedup.
        truncate_prompt: a prompt too long to leave room for max_new_tokens keeps its end (else it fails).
        """
        for chunk in self._run(prompts, speculate, truncate_prompt, sampling, text=False):
            if chunk.result is not None:
                yield chunk.result

    def stream(self, prompts, speculate: bool = True, truncate_prompt: bool = False, **sampling) -> Iterator[Chunk]:
        """Yield each request's new tokens and text as they are accepted; its last chunk holds its Result.

        Arguments as `results`. A request that cannot run yields one chunk with its failed Result.
        """
        yield from self._run(prompts, speculate, truncate_prompt, sampling, text=True)

    def _run(self, prompts, speculate: bool, truncate_prompt: bool, sampling: dict, text: bool) -> Iterator[Chunk]:
        """Queue the prompts and step until all are done; text=False: only each request's last chunk,
        without decoding its text step by step (what `results` needs)."""
        if not speculate:
            drafter, self.engine.drafter = self.engine.drafter, None  # the engine drafts nothing without one
            try:
                yield from self._run(prompts, True, truncate_prompt, sampling, text)
            finally:
                self.engine.drafter = drafter
            return
        for i, prompt in enumerate(prompt_list(prompts)):
            try:  # a bad value fails its own request, never the others
                self.add(prompt, i, truncate_prompt, **sampling)
            except (RequestError, InputError, TypeError) as e:  # TypeError: a field SamplingParams lacks
                rid = getattr(e, "id", None) or request_id(prompt, i)
                yield Chunk(rid, [], "", failed_result(rid, str(e)))
        while self.engine.has_work():
            yield from self.step(text)

    def add(self, prompt, index: int = 0, truncate_prompt: bool = False, **sampling) -> str:
        """Queue one prompt for the coming steps (it joins the batch between two); returns its id.

        Arguments as `results` (index: the id of a prompt without one). A prompt or value that
        cannot run raises RequestError or InputError (one line), and nothing is queued.
        """
        spec = as_spec(prompt, index)
        params = SamplingParams(**{**sampling, **spec.sampling})
        if spec.id in self._sent:
            raise RequestError(f"request {spec.id}: duplicate id (ids must be unique among the requests in flight)")
        if empty_prompt(spec):
            raise RequestError(f"request {spec.id}: empty prompt")
        source = None if spec.source is None else self.tokenizer(spec.source, add_special_tokens=False)["input_ids"]
        ids = encode_prompt(self.tokenizer, spec)
        if truncate_prompt:
            ids = ids[-self.engine.prompt_room(params.max_new_tokens):]
        self.engine.add(spec.id, ids, params, source_ids=source)
        self._sent[spec.id] = (0, 0)
        return spec.id

    def step(self, text: bool = True) -> list[Chunk]:
        """One target pass over every request in flight: a Chunk for each that got tokens or finished
        (text=False: for each that finished only; its output is decoded once, for its Result)."""
        finished = self.engine.step()
        live = self.engine.running + finished if text else finished
        chunks = [c for req in live if (c := self._chunk(req, req in finished))]
        for req in finished:
            del self._sent[req.id]
        return chunks

    def cancel(self, request_id: str) -> bool:
        """Drop a request in flight (its KV blocks freed at once); whether there was one."""
        self._sent.pop(request_id, None)
        return self.engine.cancel(request_id)

    def generate(self, prompts, **kw) -> list[Result]:
        """Results in the order of `prompts` (arguments as `results`)."""
        prompts = prompt_list(prompts)
        by_id: dict[str, list[Result]] = {}
        for r in self.results(prompts, **kw):  # a duplicate id's failed Result comes first, its original's later
            by_id.setdefault(r.id, []).append(r)
        return [by_id[request_id(p, i)].pop() for i, p in enumerate(prompts)]

    def _chunk(self, req: Request, finished: bool) -> Chunk | None:
        """The tokens and text of `req` not yet yielded (text held back while it ends inside a character)."""
        n_tokens, n_chars = self._sent[req.id]
        out = req.output_ids
        text = self._text(req)
        if not finished and text.endswith("\ufffd"):
            text = text[:n_chars]
        if len(out) == n_tokens and len(text) == n_chars and not finished:
            return None
        self._sent[req.id] = (len(out), len(text))
        return Chunk(req.id, out[n_tokens:], text[n_chars:], self._result(req) if finished else None)

    def _text(self, req: Request) -> str:
        return self.tokenizer.decode(req.output_ids, skip_special_tokens=True)[: req.stop_text_end]

    @property
    def device(self) -> str:
        return str(self.engine.device)

    @property
    def dtype(self) -> str:
        """The weights' dtype (what `dtype="auto"` picked), e.g. "bfloat16"."""
        return str(self.engine.cache.k.dtype).removeprefix("torch.")

    @property
    def oom_retries(self) -> int:
        """Steps redone smaller after running out of GPU memory."""
        return self.engine.oom_retries

    def _result(self, req: Request) -> Result:
        out = req.output_ids
        stopped = req.stop_text_end is not None or (out and out[-1] in self.engine.eos)
        logprobs = None
        if req.params.logprobs is not None:
            token = lambda i: self.tokenizer.decode([i])  # noqa: E731
            logprobs = [{"token": token(e["token"]), "id": e["token"], "logprob": e["logprob"],
                         "top_logprobs": [{"token": token(i), "id": i, "logprob": lp} for i, lp in e["top"]]}
                        for e in req.logprobs]
        return Result(
            id=req.id, text=self._text(req), token_ids=out,
            prompt_tokens=len(req.prompt_ids), output_tokens=len(out), target_forwards=req.forwards,
            tau=len(out) / max(1, req.forwards), latency_s=(req.finished_at or time.perf_counter()) - req.arrived,
            drafted=req.drafted, accepted=req.accepted,
            finish_reason="error" if req.error else "stop" if stopped else "length", error=req.error,
            prompt_ids=req.prompt_ids, logprobs=logprobs, successors=req.successors or None,
        )


def prompt_list(prompts) -> list:
    """A str, a request dict or a RequestSpec is one prompt; anything else iterable is a list of them.

    >>> prompt_list("Say hi."), len(prompt_list(["a", "b"]))
    (['Say hi.'], 2)
    """
    return [prompts] if isinstance(prompts, (str, dict, RequestSpec)) else list(prompts)


def request_id(prompt, index: int) -> str:
    """A prompt's id: its own (a request dict's "id", a RequestSpec's), else its index in the call."""
    if isinstance(prompt, RequestSpec):
        return prompt.id
    return str(prompt.get("id", index)) if isinstance(prompt, dict) else str(index)


def as_spec(prompt, index: int) -> RequestSpec:
    if isinstance(prompt, RequestSpec):
        return prompt
    if isinstance(prompt, str):
        return RequestSpec(id=str(index), messages=[{"role": "user", "content": prompt}])
    if isinstance(prompt, list):
        return RequestSpec(id=str(index), messages=prompt)
    if isinstance(prompt, dict):
        return spec_from_dict(prompt, str(index))
    raise TypeError(f"a prompt must be a str, a list of messages or a dict, got {type(prompt).__name__}")


def build_drafter(name: str, tokenizer, corpus: list[str] | None, task: str | None,
                  documents: list[str] | None = None):
    """The named drafter; its retrieval datastore holds the corpus files and the RAG documents."""
    return make_drafter(name, store=build_store(name, tokenizer, corpus, documents), task=task)


def build_store(name: str, tokenizer, corpus: list[str] | None, documents: list[str] | None = None):
    """The retrieval datastore of drafter `name`: corpus files + documents, None if it drafts from none."""
    from lookahead.drafters import RetrievalStore

    if name not in ("retrieval", "auto"):
        return None
    tokenize = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    store = RetrievalStore.from_files(corpus, tokenize) if corpus else RetrievalStore()  # empty: past outputs only
    if documents:
        store.extend(tokenize(d) for d in documents)
    return store
