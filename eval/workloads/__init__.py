"""Evaluation workloads: chat requests built from real data that installs offline.

Three tasks, each bundled as a small sample in `lookahead/sample_data/` (see its NOTICE.md):
`rag` (summarise an ACL paper excerpt, aclsum), `gec` (fix real misspellings
injected into English abstracts, codespell) and `gec-ua` (Ukrainian learner
texts and their corrections, UA-GEC). Builders need the optional `data` extra;
loading the bundled samples needs nothing.

>>> from lookahead.eval.workloads import load_workload
>>> case = load_workload("rag", limit=1)[0]
>>> sorted(case)
['document', 'id', 'messages', 'meta', 'reference', 'task']

Rebuild the samples with `python -m lookahead.eval.workloads.build --bundle`.
"""
from lookahead.samples import BUNDLED, WorkloadError, bundled_path, load_workload, write_jsonl

from .gec import build_gec
from .gec_ua import build_gec_ua
from .rag import build_rag

BUILDERS = {"rag": build_rag, "gec": build_gec, "gec-ua": build_gec_ua}

__all__ = [
    "BUILDERS", "BUNDLED", "WorkloadError", "build_gec", "build_gec_ua", "build_rag",
    "bundled_path", "load_workload", "write_jsonl",
]
