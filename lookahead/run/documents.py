"""Retrieval-augmented prompts: the documents first, then the question.

Documents come from `--documents` files (one set for every request) and from a
request's own "documents" field. Putting them before the question lets the model
read them before it knows what is asked (the usual RAG layout), and lets the
drafters copy from them: prompt lookup finds them in the prompt, the retrieval
datastore holds them for every request.

>>> print(rag_prompt("Who wrote it?", ["Ann wrote the report.", "Bob read it."]))
Document 1:
Ann wrote the report.
<BLANKLINE>
Document 2:
Bob read it.
<BLANKLINE>
Using the documents above, answer the following.
<BLANKLINE>
Who wrote it?
>>> new_documents("Read: Ann wrote the report. Who wrote it?", ["Ann wrote the report.", "Bob read it."])
['Bob read it.']
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from os import PathLike
from pathlib import Path

from lookahead.run.requests_io import RequestSpec

INSTRUCTION = "Using the documents above, answer the following."


def read_document_files(paths: Iterable[str | PathLike]) -> list[str]:
    """Documents of `--documents` files: a text file is one document, a JSONL line with a
    "document" or "text" string is one, a folder stands for its files (sorted).

    Raises CorpusError (one line) for a missing, empty, binary or non-UTF-8 file.
    """
    from lookahead.drafters.corpus import CorpusError, read_documents

    docs = []
    for path in map(Path, paths):
        files = sorted(f for f in path.iterdir() if f.is_file() and not f.name.startswith(".")) \
            if path.is_dir() else [path]
        if not files:
            raise CorpusError(f"{path}: folder holds no document files")
        for f in files:
            # read_documents splits text on blank lines; for a prompt the file stays one document.
            parts = read_documents([f])
            docs.extend(parts if f.suffix.lower() == ".jsonl" else ["\n\n".join(parts)])
    return docs


def rag_prompt(question: str, documents: list[str]) -> str:
    numbered = "\n\n".join(f"Document {i}:\n{d.strip()}" for i, d in enumerate(documents, 1))
    return f"{numbered}\n\n{INSTRUCTION}\n\n{question}"


def new_documents(prompt: str, documents: list[str]) -> list[str]:
    """The documents not already in the prompt (the bundled rag lines embed their own)."""
    seen, out = set(), []
    for d in documents:
        if d.strip() not in prompt and d not in seen:
            seen.add(d)
            out.append(d)
    return out


def with_documents(spec: RequestSpec, documents: list[str]) -> RequestSpec:
    """The request with `documents` put before its question (the last user message, or the raw prompt)."""
    if spec.messages is None:
        if spec.prompt is not None:
            return replace(spec, prompt=rag_prompt(spec.prompt, documents))
        return replace(spec, messages=[{"role": "user", "content": rag_prompt(spec.text, documents)}])
    users = [i for i, m in enumerate(spec.messages) if m["role"] == "user"]
    at = users[-1] if users else len(spec.messages) - 1
    messages = [dict(m) for m in spec.messages]
    messages[at]["content"] = rag_prompt(messages[at]["content"], documents)
    return replace(spec, messages=messages)
