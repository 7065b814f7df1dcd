"""`gec-ua` workload: real learner texts in Ukrainian and their human corrections.

From UA-GEC (CC BY 4.0), layer "gec-only" (grammar, spelling and punctuation
fixes, without fluency rewrites, so the output copies most of the input), first
annotator only. A case is one run of consecutive paragraphs of a document that
has at least one correction; the reference is the annotator's corrected text.

>>> case = build_gec_ua(1, seed=0)[0]
>>> case["source"] != case["reference"], case["source"] in case["messages"][0]["content"]
(True, True)
"""
from __future__ import annotations

import functools
import random

from lookahead.samples import WorkloadError

# SmolLM2's tokenizer is English-centric: Ukrainian runs ~1.25 characters per
# token, so 150-350 characters are ~120-300 tokens.
MIN_CHARS, MAX_CHARS = 150, 350
PROMPT = (
    "Correct the grammar, spelling and punctuation of the following Ukrainian text. "
    "Reply with the corrected text only.\n\n{text}"
)


def build_gec_ua(n: int, seed: int = 0) -> list[dict]:
    """`n` cases from `n` different documents, each a randomly chosen run of its paragraphs."""
    rng = random.Random(seed)
    docs = list(_documents())
    if not 0 <= n <= len(docs):
        raise WorkloadError(f"gec-ua: n must be between 0 and {len(docs)}, got {n}")
    rng.shuffle(docs)  # not rng.sample: a shuffle makes build_gec_ua(k) a prefix of build_gec_ua(n)
    cases = []
    for i, (doc_id, runs) in enumerate(docs[:n]):
        source, target = rng.choice(runs)
        cases.append({
            "id": f"gec-ua-{i:03d}",
            "task": "gec-ua",
            "messages": [{"role": "user", "content": PROMPT.format(text=source)}],
            "source": source,
            "reference": target,
            "meta": {"doc": doc_id},
        })
    return cases


def paragraph_runs(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(source, target) runs of consecutive paragraphs, MIN_CHARS..MAX_CHARS of source, with an edit.

    >>> paragraph_runs([("a" * 100, "b" * 100), ("c" * 100, "c" * 100)])[0][1][:3]
    'bbb'
    """
    runs = []
    for start in range(len(pairs)):
        for stop in range(start + 1, len(pairs) + 1):
            source = "\n".join(s for s, _ in pairs[start:stop])
            if len(source) > MAX_CHARS:
                break
            target = "\n".join(t for _, t in pairs[start:stop])
            if len(source) >= MIN_CHARS and source != target:
                runs.append((source, target))
    return runs


@functools.cache  # parsing the corpus's annotations takes ~2 s; builds with other seeds reuse it
def _documents() -> tuple[tuple[str, list[tuple[str, str]]], ...]:
    """(doc id, its candidate runs) for every document that has one, in corpus order."""
    from ua_gec import AnnotatedText, Corpus  # optional `data` extra

    docs = []
    for doc in Corpus(partition="all", annotation_layer="gec-only"):
        if doc.meta.annotator_id != 1:
            continue
        lines = [AnnotatedText(line) for line in str(doc.annotated).split("\n")]
        # An annotation spanning a line break would make the split lose text; skip such documents.
        if "\n".join(a.get_original_text() for a in lines) != doc.source:
            continue
        pairs = [(a.get_original_text().strip(), a.get_corrected_text().strip()) for a in lines]
        pairs = [(s, t) for s, t in pairs if s]
        runs = paragraph_runs(pairs)
        if runs:
            docs.append((doc.doc_id, runs))
    return tuple(docs)
