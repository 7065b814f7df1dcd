"""`rag` workload: summarise one aspect of an ACL paper given its text.

The document is the paper's title, abstract and first body paragraphs, cut at
a sentence boundary to DOC_CHARS; the reference is aclsum's human summary of
the aspect (challenge, approach or outcome). Papers (the CC BY ones, see
papers.py) come from aclsum's train and val splits, so they never overlap the
`gec` workload (test split).

>>> cases = build_rag(3, seed=0)
>>> [c["meta"]["aspect"] for c in cases]
['challenge', 'approach', 'outcome']
>>> cases[0]["document"] in cases[0]["messages"][0]["content"]
True
"""
from __future__ import annotations

import random

from lookahead.samples import WorkloadError
from .papers import Paper, leading_sentences, load_papers

# English research prose runs ~4.4 characters per SmolLM2 token, so 3300
# characters give prompts of 669-875 tokens (mean 758, bundled sample, chat
# template included): long enough to quote from, short enough for a 2-core CPU
# to prefill in seconds.
DOC_CHARS = 3300
# Papers quoting another script (one had 244 CJK characters in its excerpt)
# cost up to 2x the tokens for their length; they are left out.
MAX_NON_ASCII = 0.01
SPLITS = ["train", "val"]
ASPECTS = {
    "challenge": "the challenge it addresses (what problem, and why it matters)",
    "approach": "the approach it proposes (what the authors do or build)",
    "outcome": "its outcome (what the authors find or show)",
}
PROMPT = (
    "Read the paper excerpt below, then summarise {gloss} in one or two sentences. "
    "Use only the excerpt.\n\n{document}"
)


def build_rag(n: int, seed: int = 0) -> list[dict]:
    """`n` cases over distinct papers first (each later round asks a new aspect)."""
    papers = [p for p in load_papers(SPLITS) if _non_ascii(paper_document(p)) <= MAX_NON_ASCII]
    random.Random(seed).shuffle(papers)
    aspects = list(ASPECTS)
    pairs = [(paper, aspects[(i + r) % len(aspects)])
             for r in range(len(aspects)) for i, paper in enumerate(papers)]
    if not 0 <= n <= len(pairs):
        raise WorkloadError(f"rag: n must be between 0 and {len(pairs)}, got {n}")
    return [_case(i, paper, aspect) for i, (paper, aspect) in enumerate(pairs[:n])]


def paper_document(paper: Paper, max_chars: int = DOC_CHARS) -> str:
    """Title, abstract and body paragraphs under section headings, within `max_chars`."""
    blocks = [paper.title, "Abstract\n" + paper.abstract]
    heading = None
    for section, text in paper.paragraphs:
        block = text if section == heading else f"{section}\n{text}"
        room = max_chars - len("\n\n".join(blocks)) - 2
        if len(block) > room:
            # End on a whole sentence rather than mid-word; a heading alone is dropped.
            partial = leading_sentences(text, room - (len(block) - len(text)))
            if partial:
                blocks.append(block[: len(block) - len(text)] + partial)
            break
        blocks.append(block)
        heading = section
    return "\n\n".join(blocks)


def _non_ascii(text: str) -> float:
    return sum(ord(ch) > 127 for ch in text) / max(len(text), 1)


def _case(i: int, paper: Paper, aspect: str) -> dict:
    document = paper_document(paper)
    return {
        "id": f"rag-{i:03d}",
        "task": "rag",
        "messages": [{"role": "user", "content": PROMPT.format(gloss=ASPECTS[aspect], document=document)}],
        "document": document,
        "reference": paper.summaries[aspect],
        "meta": {"paper": paper.id, "split": paper.split, "aspect": aspect},
    }
