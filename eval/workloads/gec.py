"""`gec` workload: correct real misspellings injected into real English prose.

Text: abstracts (then introduction paragraphs) of the aclsum test-split papers
(the CC BY ones, see papers.py), cut to whole sentences. Errors: misspellings
that people actually made, from codespell's dictionary.txt (misspelling->
correction, collected from Wikipedia edits), inverted to correction ->
misspellings and applied to about one word in INJECT_EVERY. The reference is
the untouched text, so a model that fixes every error reproduces it exactly.

>>> inject("We propose a new method.", {"propose": ["porpose"]}, random.Random(0))
('We porpose a new method.', [['propose', 'porpose']])
"""
from __future__ import annotations

import random
import re
from importlib.resources import files

from lookahead.samples import WorkloadError
from .papers import leading_sentences, load_papers

# 400-900 characters of prose are 2-6 sentences; with the misspellings (which
# split into more tokens than the words they replace) the bundled texts are
# 83-258 SmolLM2 tokens, mean 155.
MIN_CHARS, MAX_CHARS = 400, 900
INJECT_EVERY = 15  # one misspelling per 15 words: ~1 per sentence in academic prose
SPLITS = ["test"]  # rag uses train and val: no text is shared between the two
PROMPT = (
    "Correct the spelling and grammar of the following text. "
    "Reply with the corrected text only.\n\n{text}"
)
_WORD = re.compile(r"[A-Za-z]+")
_ENTRY = re.compile(r"^([a-z]+)->([a-z]+)$")


def build_gec(n: int, seed: int = 0) -> list[dict]:
    """`n` cases: every paper's abstract before any introduction paragraph."""
    rng = random.Random(seed)
    typos = misspellings()
    passages = _passages()
    rng.shuffle(passages)
    passages.sort(key=lambda p: p[1] != "abstract")  # stable: shuffled within each kind
    cases = []
    for paper_id, part, text in passages:
        if len(cases) == n:
            break
        source, edits = inject(text, typos, rng)
        if not edits:  # no word of it has a recorded misspelling
            continue
        cases.append({
            "id": f"gec-{len(cases):03d}",
            "task": "gec",
            "messages": [{"role": "user", "content": PROMPT.format(text=source)}],
            "source": source,
            "reference": text,
            "meta": {"paper": paper_id, "part": part, "edits": edits},
        })
    if len(cases) != n:
        raise WorkloadError(f"gec: n must be between 0 and {len(cases)}, got {n}")
    return cases


def misspellings() -> dict[str, list[str]]:
    """codespell's dictionary.txt inverted: correct word -> its recorded misspellings.

    Only plain lowercase entries with a single correction: several corrections
    mean the misspelling is ambiguous, and the reference must be unambiguous.
    """
    path = files("codespell_lib") / "data" / "dictionary.txt"  # optional `data` extra
    typos: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _ENTRY.match(line.strip())
        if m:
            typos.setdefault(m.group(2), []).append(m.group(1))
    return typos


def inject(text: str, typos: dict[str, list[str]], rng: random.Random) -> tuple[str, list[list[str]]]:
    """Misspell about one word in INJECT_EVERY (at least one); returns the text and [word, typo] pairs."""
    words = list(_WORD.finditer(text))
    # Acronyms and CamelCase names are left alone: their case cannot be carried over.
    candidates = [m for m in words if m.group().lower() in typos
                  and (m.group().islower() or m.group().istitle())]
    k = min(len(candidates), max(1, round(len(words) / INJECT_EVERY)))
    chosen = sorted(rng.sample(candidates, k), key=lambda m: m.start())
    pieces, edits, end = [], [], 0
    for m in chosen:
        word = m.group()
        typo = rng.choice(typos[word.lower()])
        typo = typo.capitalize() if word.istitle() else typo
        pieces += [text[end:m.start()], typo]
        edits.append([word, typo])
        end = m.end()
    return "".join(pieces) + text[end:], edits


def _passages() -> list[tuple[str, str, str]]:
    """(paper id, "abstract" or "introduction-K", text) of MIN_CHARS..MAX_CHARS, in paper order."""
    passages = []
    for paper in load_papers(SPLITS):
        intro = [t for s, t in paper.paragraphs if s.lower().endswith("introduction")]
        parts = [("abstract", paper.abstract)] + [(f"introduction-{k}", t) for k, t in enumerate(intro)]
        for part, text in parts:
            # Broken hyphenation ("An- nual") is a PDF-parse artefact, not an error to correct.
            if re.search(r"[a-z]- [a-z]", text):
                continue
            text = leading_sentences(text, MAX_CHARS)
            if len(text) >= MIN_CHARS:
                passages.append((paper.id, part, text))
    return passages
