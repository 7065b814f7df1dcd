"""Request files in, result lines out: the forms `lookahead run` reads and writes.

Accepted JSONL input lines:
  {"id": "q1", "messages": [{"role": "user", "content": "..."}]}       chat
  {"id": "q1", "prompt": "..."}                                           raw completion
  {"id": "q1", "text": "..."}                                             bare text: the task makes the prompt
  {"custom_id": "q1", "body": {"messages": [...], "max_tokens": 64}}      OpenAI batch form
Optional per line: "max_new_tokens" (or "max_tokens"), "temperature", "top_p",
"source" (text a rewriting task copies from; feeds the source-aligned drafter) and
"documents" (a list of strings; "document": one string) for retrieval-augmented prompts.
A file named *.txt holds one bare-text request per non-blank line (ids line-1, line-2, ...).

>>> parse_line('{"id": "a", "prompt": "Hi"}', 1).prompt
'Hi'
>>> parse_line('{"id": "a", "text": "Fix this sentense.", "documents": ["d"]}', 1).documents
['d']
>>> parse_line('{"id": "a"}', 7)
Traceback (most recent call last):
lookahead.run.requests_io.InputError: line 7: needs "messages", "prompt" or "text"
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


class InputError(ValueError):
    """A bad request file or line (one line for the user)."""


@dataclass
class RequestSpec:
    id: str
    messages: list[dict] | None = None  # chat form
    prompt: str | None = None  # raw form
    max_new_tokens: int | None = None  # None: the run's; sampling values are checked per request (SamplingParams)
    temperature: float | None = None
    top_p: float | None = None
    source: str | None = None
    text: str | None = None  # bare form: a question or a text to correct, made a prompt by the task
    documents: list[str] = field(default_factory=list)  # for the prompt and the retrieval datastore
    openai_batch: bool = False  # answer in the OpenAI batch output form
    extra: dict = field(default_factory=dict)  # fields passed through to the result line


def parse_line(line: str, lineno: int) -> RequestSpec:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(f"line {lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise InputError(f"line {lineno}: expected a JSON object")
    batch = "body" in obj and "custom_id" in obj
    body = obj["body"] if batch else obj
    if not isinstance(body, dict):
        raise InputError(f"line {lineno}: \"body\" must be an object")
    rid = obj.get("custom_id") if batch else obj.get("id", f"line-{lineno}")
    messages, prompt, text = body.get("messages"), body.get("prompt"), body.get("text")
    if messages is None and prompt is None and text is None:
        raise InputError(f"line {lineno}: needs \"messages\", \"prompt\" or \"text\"")
    if messages is not None and not (
        isinstance(messages, list) and messages
        and all(isinstance(m, dict) and isinstance(m.get("content"), str) and "role" in m for m in messages)
    ):
        raise InputError(f"line {lineno}: \"messages\" must be a non-empty list of {{role, content}} objects")
    for name, value in (("prompt", prompt), ("text", text), ("source", obj.get("source"))):
        if value is not None and not isinstance(value, str):
            raise InputError(f"line {lineno}: \"{name}\" must be a string")
    given = "".join(m["content"] for m in messages) if messages is not None else prompt if prompt is not None else text
    if given.strip() == "":
        raise InputError(f"line {lineno}: empty prompt")
    max_new = body.get("max_new_tokens", body.get("max_tokens"))  # sampling values: checked by SamplingParams
    keep = {k: obj[k] for k in ("task", "reference") if k in obj}
    return RequestSpec(str(rid), messages, prompt, max_new, body.get("temperature"), body.get("top_p"),
                       obj.get("source"), text, _documents(obj, lineno), batch, keep)


def _documents(obj: dict, lineno: int) -> list[str]:
    docs = obj.get("documents", [obj["document"]] if "document" in obj else [])
    if not (isinstance(docs, list) and all(isinstance(d, str) for d in docs)):
        raise InputError(f"line {lineno}: \"documents\" must be a list of strings (\"document\": one string)")
    return [d for d in docs if d.strip()]


@dataclass
class InputLine:
    """One non-blank input line: its request, or why it cannot be one."""

    lineno: int
    spec: RequestSpec | None
    error: str | None = None


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
            out.append(InputLine(lineno, None, str(e)))
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


def result_line(spec: RequestSpec, result: dict) -> dict:
    """The output line for a request, in the form its input line used."""
    if not spec.openai_batch:
        return {"id": spec.id, **result, **spec.extra}
    if result.get("error"):
        return {"id": spec.id, "custom_id": spec.id, "response": None, "error": {"message": result["error"]}}
    body = {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": result["text"]},
                     "finish_reason": result["finish_reason"]}],
        "usage": {"prompt_tokens": result["prompt_tokens"], "completion_tokens": result["output_tokens"],
                  "total_tokens": result["prompt_tokens"] + result["output_tokens"]},
        "lookahead": {k: result[k] for k in ("target_forwards", "tau", "latency_s")},
    }
    return {"id": spec.id, "custom_id": spec.id, "response": {"status_code": 200, "body": body}, "error": None}
