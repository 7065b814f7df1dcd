"""What a task makes of a request: the prompt around its text, its source text, its documents.

- chat: bare text is the user's message.
- gec (grammar correction): bare text is the text to correct; an instruction goes
  before it and it becomes the request's source, which the source-aligned
  drafter copies from.
- rag: documents (`--documents` and the request's own) go before the question;
  a request with none at all is an error.
Documents are put into the prompt whatever the task, once: a document the prompt
already holds (the bundled rag lines) is not repeated.

>>> spec = shape(RequestSpec("s1", text="She go home."), "gec", [])
>>> spec.messages[0]["content"].splitlines()[-1], spec.source
('She go home.', 'She go home.')
>>> shape(RequestSpec("q", text="Why?"), "rag", [])
Traceback (most recent call last):
lookahead.run.requests_io.InputError: request q: task rag needs documents (--documents or a "documents" field)
"""
from __future__ import annotations

from dataclasses import replace

from lookahead.run.documents import new_documents, with_documents
from lookahead.run.requests_io import InputError, RequestSpec

# The bundled gec workload's instruction, so that a user's sentences are asked the same way.
GEC_INSTRUCTION = "Correct the spelling and grammar of the following text. Reply with the corrected text only."


def infer_task(task: str | None, workload: str | None, documents: list[str]) -> str:
    """--task when given; else gec for the gec workloads, rag for the rag workload or --documents, else chat."""
    if task is not None:
        return task
    if workload in ("gec", "gec-ua"):
        return "gec"
    return "rag" if workload == "rag" or documents else "chat"


def shape(spec: RequestSpec, task: str, documents: list[str]) -> RequestSpec:
    """The request as the model sees it; `documents` are the ones shared by every request."""
    if task == "gec" and spec.text is not None:
        content = f"{GEC_INSTRUCTION}\n\n{spec.text}"
        spec = replace(spec, messages=[{"role": "user", "content": content}], source=spec.source or spec.text)
    all_docs = documents + spec.documents
    if task == "rag" and not all_docs:
        raise InputError(f"request {spec.id}: task rag needs documents (--documents or a \"documents\" field)")
    fresh = new_documents(prompt_text(spec), all_docs)
    if fresh:
        spec = with_documents(spec, fresh)
    if spec.messages is None and spec.prompt is None:
        spec = replace(spec, messages=[{"role": "user", "content": spec.text}])
    return spec


def prompt_text(spec: RequestSpec) -> str:
    if spec.messages is not None:
        return "\n".join(m["content"] for m in spec.messages)
    return spec.prompt if spec.prompt is not None else spec.text
