"""The Python API: one object that holds the model, the drafters and the engine.

>>> from lookahead import Lookahead
>>> lm = Lookahead()                                   # doctest: +SKIP
>>> [r] = lm.generate(["Repeat exactly: the quick brown fox."], max_new_tokens=16)  # doctest: +SKIP
>>> r.text, r.tau                                      # doctest: +SKIP
('The quick brown fox.', 3.2)

The default is the bundled SmolLM2 on the CPU in fp32, with the `auto` drafter (a
mixer of prompt lookup, the suffix automaton and retrieval over past outputs) and
the goodput controller.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from lookahead.drafters.mixer import make_drafter

from lookahead.engine import Engine, EngineConfig, Request, RequestError, SamplingParams
from lookahead.run.requests_io import RequestSpec, encode_prompt
from lookahead.result import Result, failed_result


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

    def stream(self, prompts: Iterable, max_new_tokens: int = 128, temperature: float = 0.0, top_p: float = 1.0,
               seed: int = 0, speculate: bool = True) -> Iterator[Result]:
        """Yield each request's Result as it finishes (continuous batching).

        speculate=False decodes plainly (no drafter), the baseline of a measured speedup.
        """
        if not speculate:
            drafter, self.engine.drafter = self.engine.drafter, None  # the engine drafts nothing without one
            try:
                yield from self.stream(prompts, max_new_tokens, temperature, top_p, seed)
            finally:
                self.engine.drafter = drafter
            return
        specs = [as_spec(p, i) for i, p in enumerate(prompts)]
        for spec in specs:
            try:  # a bad value fails its own request, never the others
                params = SamplingParams(max_new_tokens if spec.max_new_tokens is None else spec.max_new_tokens,
                                        temperature if spec.temperature is None else spec.temperature,
                                        top_p if spec.top_p is None else spec.top_p, seed)
                source = (None if spec.source is None
                          else self.tokenizer(spec.source, add_special_tokens=False)["input_ids"])
                self.engine.add(spec.id, encode_prompt(self.tokenizer, spec), params, source_ids=source)
            except RequestError as e:
                yield failed_result(spec.id, str(e))
        while self.engine.has_work():
            for req in self.engine.step():
                yield self._result(req)

    def generate(self, prompts: Iterable, **kw) -> list[Result]:
        """Results in the order of `prompts` (str, chat message list, or request dict)."""
        prompts = list(prompts)
        by_id = {r.id: r for r in self.stream(prompts, **kw)}
        return [by_id[as_spec(p, i).id] for i, p in enumerate(prompts)]

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

    def estimated_speedup(self, results: list[Result]) -> float | None:
        """Plain over speculative decoding time of these results, by the engine's fitted step cost model."""
        from lookahead.run.report import estimated_speedup

        return estimated_speedup(results, self.engine.controller.cost_model)

    def _result(self, req: Request) -> Result:
        out = req.output_ids
        reason = "error" if req.error else ("stop" if out and out[-1] in self.engine.eos else "length")
        return Result(
            id=req.id, text=self.tokenizer.decode(out, skip_special_tokens=True), token_ids=out,
            prompt_tokens=len(req.prompt_ids), output_tokens=len(out), target_forwards=req.forwards,
            tau=len(out) / max(1, req.forwards), latency_s=(req.finished_at or time.perf_counter()) - req.arrived,
            drafted=req.drafted, accepted=req.accepted, finish_reason=reason, error=req.error, prompt_ids=req.prompt_ids,
        )


def as_spec(prompt, index: int) -> RequestSpec:
    if isinstance(prompt, RequestSpec):
        return prompt
    if isinstance(prompt, str):
        return RequestSpec(id=str(index), messages=[{"role": "user", "content": prompt}])
    if isinstance(prompt, list):
        return RequestSpec(id=str(index), messages=prompt)
    if isinstance(prompt, dict):
        return RequestSpec(id=str(prompt.get("id", index)), messages=prompt.get("messages"),
                           prompt=prompt.get("prompt"), source=prompt.get("source"))
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
