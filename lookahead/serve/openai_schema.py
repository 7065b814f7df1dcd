"""OpenAI's request and response shapes: a body in, a RequestSpec out; a Result or Chunk in, JSON out.

A body is checked whole before anything is queued: an unknown field, a value out of range or an
unsupported option is a `BadRequest` (HTTP 400) naming the field. OpenAI's fields are honoured
(`n` must be 1; `model` may be anything: the server has one model); lookahead's own are extra
fields: `top_k`, `min_p`, `documents` (put before the question), `task` ("chat", "rag" or "gec") and
`source` (the text a gec request corrects: it becomes the prompt when there are no messages, and
the source-aligned drafter copies from it; "messages": [] then stands for none). A null value means
the field's default.

>>> req = parse_body({"model": "x", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8},
...                  "chat", "chatcmpl-1")
>>> req.spec.id, req.spec.sampling, req.stream
('chatcmpl-1', {'max_new_tokens': 8}, False)
>>> parse_body({"prompt": "Once", "n": 2}, "text", "cmpl-1")
Traceback (most recent call last):
lookahead.serve.openai_schema.BadRequest: "n" must be 1 (one completion per request), got 2
>>> parse_body({"prompt": "Once", "best_of": 2}, "text", "cmpl-1")
Traceback (most recent call last):
lookahead.serve.openai_schema.BadRequest: unknown field 'best_of' (fields: model, prompt, max_tokens, ...
"""
from __future__ import annotations

from dataclasses import dataclass

from lookahead.engine.config import TASKS, RequestError, SamplingParams
from lookahead.result import Result
from lookahead.run.requests_io import InputError, RequestSpec, spec_from_dict
from lookahead.run.tasks import shape

COMMON = ("model", "max_tokens", "temperature", "top_p", "stop", "seed", "n", "user", "stream", "stream_options",
          "logprobs", "top_k", "min_p", "documents", "task", "source")  # the last five: lookahead's own
FIELDS = {"chat": ("model", "messages", "max_completion_tokens", "top_logprobs", *COMMON[1:]),
          "text": ("model", "prompt", *COMMON[1:])}
KINDS = {"chat": "chat.completion", "text": "text_completion"}  # the endpoint's kind -> OpenAI's object name


class BadRequest(ValueError):
    """A body the server will not run (HTTP 400); `param`: the field at fault, where there is one."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


@dataclass
class CompletionRequest:
    """One checked body, ready for the engine."""

    kind: str  # "chat" (/v1/chat/completions) or "text" (/v1/completions)
    spec: RequestSpec  # shaped by its task; spec.sampling holds the SamplingParams fields it sets
    stream: bool
    include_usage: bool  # stream_options.include_usage: a last chunk with the usage
    logprobs: bool  # report per-token log-probabilities in the answer


def parse_body(body, kind: str, request_id: str) -> CompletionRequest:
    """The request a decoded JSON body asks for, or BadRequest."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    body = {k: v for k, v in body.items() if v is not None}
    unknown = [k for k in body if k not in FIELDS[kind]]
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r} (fields: {', '.join(FIELDS[kind])})", unknown[0])
    if body.get("n", 1) != 1:
        raise BadRequest(f"\"n\" must be 1 (one completion per request), got {body['n']!r}", "n")
    stream, options = body.pop("stream", False), body.pop("stream_options", {})
    if not isinstance(stream, bool):
        raise BadRequest(f"\"stream\" must be true or false, got {stream!r}", "stream")
    if not (isinstance(options, dict) and set(options) <= {"include_usage"}
            and isinstance(options.get("include_usage", False), bool)):
        raise BadRequest("\"stream_options\" must be {\"include_usage\": true or false}", "stream_options")
    if options and not stream:
        raise BadRequest("\"stream_options\" needs \"stream\": true", "stream_options")
    if not isinstance(body.get("model", ""), str):
        raise BadRequest("\"model\" must be a string", "model")
    task = body.pop("task", "chat")
    if task not in TASKS:
        raise BadRequest(f"\"task\" must be one of {', '.join(TASKS)}, got {task!r}", "task")
    if task == "gec" and body.get("messages") == []:
        del body["messages"]  # the openai client's `messages` is required: [] leaves the prompt to the task
    if task == "gec" and "source" not in body:
        raise BadRequest("task gec needs \"source\" (the text to correct)", "source")
    if kind == "chat" and "messages" not in body and task != "gec":
        raise BadRequest("needs \"messages\" (a list of {role, content} objects)", "messages")
    if kind == "text" and ("prompt" in body or task != "gec"):
        body["prompt"] = one_prompt(body.get("prompt"))
    if stream and body.get("logprobs", False) is not False:
        raise BadRequest("\"logprobs\" with \"stream\": true is not supported (ask without streaming)", "logprobs")
    if kind == "chat" and not isinstance(body.get("logprobs", False), bool):
        raise BadRequest("\"logprobs\" must be true or false (\"top_logprobs\": how many alternatives)", "logprobs")
    if task == "gec" and "messages" not in body:
        body["text"] = body["source"]  # the task's own instruction goes before it (lookahead run --task gec)
    try:
        spec = shape(spec_from_dict({**body, "id": request_id}, request_id, "request"), task, [])
        SamplingParams(**spec.sampling)
    except InputError as e:
        raise BadRequest(str(e).removeprefix("request: ")) from None
    except RequestError as e:
        raise BadRequest(str(e), e.field) from None
    return CompletionRequest(kind, spec, stream, options.get("include_usage", False),
                             "logprobs" in spec.sampling)


def one_prompt(prompt) -> str:
    """/v1/completions' prompt: a string, or a list holding one (one completion per request).

    >>> one_prompt(["Once upon"])
    'Once upon'
    """
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise BadRequest("\"prompt\" must be a string (or a list of one string)", "prompt")
    return prompt


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    """OpenAI's error object.

    >>> error_body("bad", param="n")
    {'error': {'message': 'bad', 'type': 'invalid_request_error', 'param': 'n', 'code': None}}
    """
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def usage(result: Result) -> dict:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.output_tokens,
            "total_tokens": result.prompt_tokens + result.output_tokens}


def response(req: CompletionRequest, result: Result, model: str, created: int) -> dict:
    """The whole answer of a request without streaming, with lookahead's own numbers beside OpenAI's."""
    logprobs = logprobs_field(req.kind, result) if req.logprobs else None
    choice = ({"index": 0, "message": {"role": "assistant", "content": result.text}} if req.kind == "chat"
              else {"index": 0, "text": result.text})
    return {"id": req.spec.id, "object": KINDS[req.kind], "created": created, "model": model,
            "choices": [{**choice, "logprobs": logprobs, "finish_reason": result.finish_reason}],
            "usage": usage(result),
            "lookahead": {"target_forwards": result.target_forwards, "tau": result.tau,
                          "drafted": result.drafted, "accepted": result.accepted}}


def chunk(req: CompletionRequest, model: str, created: int, text: str | None = None,
          finish_reason: str | None = None, first: bool = False) -> dict:
    """One streamed chunk: new text, or (finish_reason) the end; a chat stream's first one names the role.

    >>> req = parse_body({"prompt": "Hi", "stream": True}, "text", "cmpl-1")
    >>> chunk(req, "m", 0, "lo")["choices"]
    [{'index': 0, 'text': 'lo', 'logprobs': None, 'finish_reason': None}]
    """
    if req.kind == "chat":
        delta = {"role": "assistant", "content": ""} if first else {} if text is None else {"content": text}
        choice = {"index": 0, "delta": delta}
    else:
        choice = {"index": 0, "text": text or ""}
    return {"id": req.spec.id, "object": KINDS[req.kind] + ("" if req.kind == "text" else ".chunk"),
            "created": created, "model": model,
            "choices": [{**choice, "logprobs": None, "finish_reason": finish_reason}]}


def usage_chunk(req: CompletionRequest, result: Result, model: str, created: int) -> dict:
    """The last chunk of a stream asked with include_usage: no choices, the usage."""
    return {**chunk(req, model, created), "choices": [], "usage": usage(result)}


def logprobs_field(kind: str, result: Result) -> dict:
    """Result.logprobs in the endpoint's form: chat's "content" list, or completions' parallel lists."""
    entries = result.logprobs or []
    if kind == "chat":
        return {"content": [{"token": e["token"], "logprob": e["logprob"], "bytes": list(e["token"].encode()),
                             "top_logprobs": [{"token": t["token"], "logprob": t["logprob"],
                                               "bytes": list(t["token"].encode())} for t in e["top_logprobs"]]}
                            for e in entries]}
    offsets, at = [], 0
    for e in entries:
        offsets.append(at)
        at += len(e["token"])
    return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
            "text_offset": offsets}
