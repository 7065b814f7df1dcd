"""Request files in, result lines out: the forms `lookahead run` reads and writes.

Accepted JSONL input lines:
  {"id": "q1", "messages": [{"role": "user", "content": "..."}]}       chat (the model's chat template)
  {"id": "q1", "prompt": "..."}                                           raw completion: no chat template
  {"id": "q1", "text": "..."}                                             bare text: the task makes the prompt
  {"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions",   OpenAI batch form
   "body": {"model": "...", "messages": [...], "max_tokens": 64}}
Optional per line: the sampling fields "max_new_tokens" (or "max_tokens", "max_completion_tokens"),
"temperature", "top_p", "top_k", "min_p", "seed", "stop" (a string or up to 4), "logprobs" (a count
of alternatives, or true with "top_logprobs"); "source" (text a rewriting task copies from; feeds the
source-aligned drafter) and "documents" (a list of strings; "document": one string) for
retrieval-augmented prompts; "task", "reference" and "user" pass through to the result line;
"meta" (provenance) and OpenAI's "model" are ignored and "n" must be 1. Any other field fails its line, naming the
fields there are. A file named *.txt holds one bare-text request per non-blank line (ids line-1, ...).

>>> parse_line('{"id": "a", "prompt": "Hi"}', 1).prompt
'Hi'
>>> parse_line('{"id": "a", "text": "Fix this sentense.", "documents": ["d"], "max_tokens": 8}', 1).sampling
{'max_new_tokens': 8}
>>> parse_line('{"id": "a"}', 7)
Traceback (most recent call last):
lookahead.run.requests_io.InputError: line 7: needs "messages", "prompt" or "text"
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


class InputError(ValueError):
    """A bad request file or line (one line for the user); `id`: the line's own id, where it has one."""

    id: str | None = None
    openai_batch: bool = False  # the line was in the OpenAI batch form


@dataclass
class RequestSpec:
    id: str
    messages: list[dict] | None = None  # chat form
    prompt: str | None = None  # raw form
    sampling: dict = field(default_factory=dict)  # SamplingParams fields this request sets (checked when it runs)
    source: str | None = None
    text: str | None = None  # bare form: a question or a text to correct, made a prompt by the task
    documents: list[str] = field(default_factory=list)  # for the prompt and the retrieval datastore
    openai_batch: bool = False  # answer in the OpenAI batch output form
    extra: dict = field(default_factory=dict)  # fields passed through to the result line


SAMPLING_FIELDS = ("max_new_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "stop")
MAX_TOKENS_ALIASES = ("max_tokens", "max_completion_tokens")  # OpenAI's names for max_new_tokens
PASSED_THROUGH = ("task", "reference", "user")
FIELDS = ("id", "messages", "prompt", "text", "source", "documents", "document", "logprobs", "top_logprobs",
          "model", "n", "meta", *SAMPLING_FIELDS, *MAX_TOKENS_ALIASES, *PASSED_THROUGH)  # meta: provenance, unused
BATCH_FIELDS = ("custom_id", "method", "url", "body")
BATCH_URLS = ("/v1/chat/completions", "/v1/completions")


def parse_line(line: str, lineno: int) -> RequestSpec:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(f"line {lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise InputError(f"line {lineno}: expected a JSON object")
    batch = "body" in obj and "custom_id" in obj
    try:
        if batch:
            _known(obj, BATCH_FIELDS, f"line {lineno}")
            if obj.get("url", BATCH_URLS[0]) not in BATCH_URLS:
                raise InputError(f"line {lineno}: \"url\" must be one of {', '.join(BATCH_URLS)}, got {obj['url']!r}")
            if not isinstance(obj["body"], dict):
                raise InputError(f"line {lineno}: \"body\" must be an object")
        spec = spec_from_dict(obj["body"] if batch else obj, f"line-{lineno}", f"line {lineno}")
    except InputError as e:
        e.id = str(obj.get("custom_id") if batch else obj.get("id", f"line-{lineno}"))
        e.openai_batch = batch
        raise
    if batch:
        spec.id, spec.openai_batch = str(obj["custom_id"]), True
    return spec


def spec_from_dict(obj: dict, default_id: str, where: str | None = None) -> RequestSpec:
    """A request from its fields (a JSONL line, a batch line's body, a dict given to the API).
    where: how errors name it (default: by its id)."""
    rid = str(obj.get("id", default_id))
    where = where or f"request {rid}"
    _known(obj, FIELDS, where)
    messages, prompt, text = obj.get("messages"), obj.get("prompt"), obj.get("text")
    if messages is None and prompt is None and text is None:
        raise InputError(f"{where}: needs \"messages\", \"prompt\" or \"text\"")
    if messages is not None and not (
        isinstance(messages, list) and messages
        and all(isinstance(m, dict) and isinstance(m.get("content"), str) and "role" in m for m in messages)
    ):
        raise InputError(f"{where}: \"messages\" must be a non-empty list of {{role, content}} objects")
    for name, value in (("prompt", prompt), ("text", text), ("source", obj.get("source"))):
        if value is not None and not isinstance(value, str):
            raise InputError(f"{where}: \"{name}\" must be a string")
    if obj.get("n", 1) != 1:
        raise InputError(f"{where}: \"n\" must be 1 (one completion per request), got {obj['n']!r}")
    spec = RequestSpec(rid, messages, prompt, _sampling(obj, where), obj.get("source"), text,
                       _documents(obj, where), extra={k: obj[k] for k in PASSED_THROUGH if k in obj})
    if empty_prompt(spec):
        raise InputError(f"{where}: empty prompt")
    return spec


def empty_prompt(spec: RequestSpec) -> bool:
    """Nothing but white space where the request's words should be."""
    given = ("".join(m["content"] for m in spec.messages) if spec.messages is not None
             else spec.prompt if spec.prompt is not None else spec.text or "")
    return given.strip() == ""


def _known(obj: dict, fields: tuple[str, ...], where: str) -> None:
    unknown = [k for k in obj if k not in fields]
    if unknown:
        raise InputError(f"{where}: unknown field {unknown[0]!r} (fields: {', '.join(fields)})")


def _sampling(obj: dict, where: str) -> dict:
    """The SamplingParams fields the request sets; their values are checked when it runs, alone."""
    given = [k for k in ("max_new_tokens", *MAX_TOKENS_ALIASES) if k in obj]
    if len(given) > 1:
        raise InputError(f"{where}: give one of {', '.join(given)}")
    out = {k: obj[k] for k in SAMPLING_FIELDS if k in obj}
    if given:
        out["max_new_tokens"] = obj[given[0]]
    logprobs = obj.get("logprobs")
    if logprobs is True:  # the chat form: a flag, and how many alternatives beside it
        out["logprobs"] = obj.get("top_logprobs", 0)
    elif logprobs is not None and logprobs is not False:
        out["logprobs"] = logprobs
    elif "top_logprobs" in obj:
        raise InputError(f"{where}: \"top_logprobs\" needs \"logprobs\": true")
    return out


def _documents(obj: dict, where: str) -> list[str]:
    docs = obj.get("documents", [obj["document"]] if "document" in obj else [])
    if not (isinstance(docs, list) and all(isinstance(d, str) for d in docs)):
        raise InputError(f"{where}: \"documents\" must be a list of strings (\"document\": one string)")
    return [d for d in docs if d.strip()]


@dataclass
class InputLine:
    """One non-blank input line: its request, or why it cannot be one."""

    lineno: int
    spec: RequestSpec | None
    error: str | None = None
    id: str | None = None  # a bad line's own id, where it gave one
    openai_batch: bool = False  # a bad line in the OpenAI batch form (answered in that form)


def read_requests(path: str | Path) -> list[InputLine]:
    """Every non-blank line, good or bad: a bad line never hides the good ones."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"input file not found: {path}")
    if path.is_dir():
        raise InputError(f"input is a directory, expected a file: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"input file is not UTF-8 text (bad byte at offset {e.start}): {path}") from None
    plain = path.suffix.lower() == ".txt"
    out, seen = [], set()
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            spec = RequestSpec(f"line-{lineno}", text=line.strip()) if plain else parse_line(line, lineno)
            if spec.id in seen:
                raise InputError(f"line {lineno}: duplicate id {spec.id!r}")
            seen.add(spec.id)
            out.append(InputLine(lineno, spec))
        except InputError as e:
            out.append(InputLine(lineno, None, str(e), e.id, e.openai_batch))
    if not out:
        raise InputError(f"input file has no requests: {path}")
    return out


def encode_prompt(tokenizer, spec: RequestSpec) -> list[int]:
    """Token ids of the request: the chat template when the model has one; bare text is a user message."""
    messages = spec.messages
    if messages is None and spec.prompt is None:
        messages = [{"role": "user", "content": spec.text}]
    if messages is not None:
        if getattr(tokenizer, "chat_template", None):
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
        text = "\n\n".join(m["content"] for m in messages) + "\n\n"
        return tokenizer(text, add_special_tokens=True)["input_ids"]
    return tokenizer(spec.prompt, add_special_tokens=True)["input_ids"]


def error_line(rid: str, line: InputLine) -> dict:
    """The output line for a bad input line, in the form the line used."""
    if line.openai_batch:
        return {"id": rid, "custom_id": rid, "line": line.lineno, "response": None, "error": {"message": line.error}}
    return {"id": rid, "line": line.lineno, "error": line.error, "finish_reason": "error"}


def result_line(spec: RequestSpec, result: dict) -> dict:
    """The output line for a request, in the form its input line used."""
    if not spec.openai_batch:
        return {"id": spec.id, **result, **spec.extra}
    if result.get("error"):
        return {"id": spec.id, "custom_id": spec.id, "response": None, "error": {"message": result["error"]}}
    body = {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": result["text"]},
                     "finish_reason": result["finish_reason"],
                     "logprobs": {"content": result["logprobs"]} if "logprobs" in result else None}],
        "usage": {"prompt_tokens": result["prompt_tokens"], "completion_tokens": result["output_tokens"],
                  "total_tokens": result["prompt_tokens"] + result["output_tokens"]},
        "lookahead": {k: result[k] for k in ("target_forwards", "tau", "latency_s")},
    }
    return {"id": spec.id, "custom_id": spec.id, "response": {"status_code": 200, "body": body}, "error": None}
