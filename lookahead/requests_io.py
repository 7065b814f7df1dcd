"""Request files in, result lines out: the JSONL forms `lookahead run` reads and writes.

Accepted input lines:
  {"id": "q1", "messages": [{"role": "user", "content": "..."}]}       chat
  {"id": "q1", "prompt": "..."}                                           raw completion
  {"custom_id": "q1", "body": {"messages": [...], "max_tokens": 64}}      OpenAI batch form
Optional per line: "max_new_tokens" (or "max_tokens"), "temperature", "top_p", and
"source" (text a rewriting task copies from; feeds the source-aligned drafter).

>>> parse_line('{"id": "a", "prompt": "Hi"}', 1).prompt
'Hi'
>>> parse_line('{"id": "a"}', 7)
Traceback (most recent call last):
lookahead.requests_io.InputError: line 7: needs "messages" or "prompt"
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
    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    source: str | None = None
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
    messages, prompt = body.get("messages"), body.get("prompt")
    if messages is None and prompt is None:
        raise InputError(f"line {lineno}: needs \"messages\" or \"prompt\"")
    if messages is not None and not (
        isinstance(messages, list) and messages
        and all(isinstance(m, dict) and isinstance(m.get("content"), str) and "role" in m for m in messages)
    ):
        raise InputError(f"line {lineno}: \"messages\" must be a non-empty list of {{role, content}} objects")
    if prompt is not None and not isinstance(prompt, str):
        raise InputError(f"line {lineno}: \"prompt\" must be a string")
    if (prompt if messages is None else "".join(m["content"] for m in messages)).strip() == "":
        raise InputError(f"line {lineno}: empty prompt")
    max_new = body.get("max_new_tokens", body.get("max_tokens"))
    if max_new is not None and (not isinstance(max_new, int) or max_new <= 0):
        raise InputError(f"line {lineno}: max_tokens must be a positive integer")
    keep = {k: obj[k] for k in ("task", "reference") if k in obj}
    return RequestSpec(str(rid), messages, prompt, max_new, body.get("temperature"), body.get("top_p"),
                       obj.get("source"), batch, keep)


def read_requests(path: str | Path) -> list[tuple[RequestSpec | None, str | None]]:
    """Every line as (spec, None) or (None, error); a bad line never hides the good ones."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"input file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"input file is not UTF-8 text: {path}") from None
    out, seen = [], set()
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            spec = parse_line(line, lineno)
            if spec.id in seen:
                raise InputError(f"line {lineno}: duplicate id {spec.id!r}")
            seen.add(spec.id)
            out.append((spec, None))
        except InputError as e:
            out.append((None, str(e)))
    if not out:
        raise InputError(f"input file has no requests: {path}")
    return out


def encode_prompt(tokenizer, spec: RequestSpec) -> list[int]:
    """Token ids of the request: the chat template when the model has one."""
    if spec.messages is not None:
        if getattr(tokenizer, "chat_template", None):
            ids = tokenizer.apply_chat_template(spec.messages, add_generation_prompt=True, tokenize=True)
            return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
        text = "\n\n".join(m["content"] for m in spec.messages) + "\n\n"
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
