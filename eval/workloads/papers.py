"""ACL papers from the `aclsum` package (MIT), read offline, as plain text.

aclsum ships two views of each paper: sentence lists that are tokenised
("Machine Translation ( MT ) systems"), and the S2ORC full-text parse with the
text as written. Workloads use the parse, so prompts read like real documents.

Only papers from CC_BY_SINCE on are used: the ACL Anthology licenses them CC BY
4.0, while earlier papers are CC BY-NC-SA 3.0, which an Apache-2.0 project
should not bundle. That keeps 112 of aclsum's 250 papers.

>>> paper = load_papers(["test"])[0]
>>> paper.year >= CC_BY_SINCE, sorted(paper.summaries)
(True, ['approach', 'challenge', 'outcome'])
>>> anthology_year("P17-1024"), anthology_year("W99-0601"), anthology_year("2021.acl-long.512")
(2017, 1999, 2021)
>>> split_sentences("It works. See Table 1. Done.")
['It works.', 'See Table 1.', 'Done.']
"""
from __future__ import annotations

import re
from dataclasses import dataclass

# A sentence ends at . ! or ? followed by space and a capital, digit or quote;
# "et al. (2019)" and "e.g. the" stay inside their sentence.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"“(])")
_NO_BREAK_BEFORE = re.compile(r"(?:\bal|\be\.g|\bi\.e|\bcf|\bvs|\bFig|\bEq|\bSec|\bNo)\.$")


CC_BY_SINCE = 2016


@dataclass(frozen=True)
class Paper:
    id: str  # ACL Anthology id
    year: int
    split: str  # aclsum split: train, val or test
    title: str
    summaries: dict[str, str]  # aspect (challenge, approach, outcome) -> human summary
    abstract: str
    paragraphs: list[tuple[str, str]]  # body text as (section heading, paragraph)


def load_papers(splits: list[str]) -> list[Paper]:
    """The CC BY papers of the given aclsum splits, in the package's order."""
    from aclsum import ACLSum  # optional `data` extra

    papers = []
    for split in splits:
        for doc in ACLSum(split):
            year = anthology_year(doc.id)
            if year < CC_BY_SINCE:
                continue
            parse = doc.get_fulltext_parse()
            body = [(p["section"], p["text"].strip()) for p in parse["pdf_parse"]["body_text"]]
            papers.append(Paper(
                id=doc.id, year=year, split=split, title=doc.title.strip(), summaries=dict(doc.summaries),
                abstract=parse["abstract"].strip(), paragraphs=[(s, t) for s, t in body if t],
            ))
    return papers


def anthology_year(paper_id: str) -> int:
    """Publication year from an ACL Anthology id: "2020.acl-main.1" or "P17-1024" (two-digit year)."""
    if "." in paper_id:
        return int(paper_id.split(".")[0])
    yy = int(paper_id[1:3])
    return 1900 + yy if yy >= 60 else 2000 + yy  # the Anthology starts in 1965


def split_sentences(text: str) -> list[str]:
    """Split English prose into sentences (good enough for trimming to a budget)."""
    pieces = _SENTENCE_END.split(text.strip())
    sentences: list[str] = []
    for piece in pieces:
        if sentences and _NO_BREAK_BEFORE.search(sentences[-1]):
            sentences[-1] += " " + piece
        else:
            sentences.append(piece)
    return [s for s in sentences if s]


def leading_sentences(text: str, max_chars: int) -> str:
    """The longest run of whole leading sentences of `text` within `max_chars` ("" if none fits)."""
    kept = ""
    for sentence in split_sentences(text):
        longer = f"{kept} {sentence}" if kept else sentence
        if len(longer) > max_chars:
            break
        kept = longer
    return kept
