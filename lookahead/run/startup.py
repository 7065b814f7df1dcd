"""Start-up timestamps: with LOOKAHEAD_STARTUP_TRACE=1 in the environment, `lookahead run` writes one
line `lookahead-startup <phase> <unix time>` to stderr as it passes each phase (eval/bench_startup.py
reads them; `result` and `line` come once per request, the first counts); without it nothing is written.

  cli           the command line parsed (Python, typer and the CLI module imported)
  inputs        requests, documents and corpus read and checked (the drafters imported)
  torch         torch imported
  transformers  transformers' package imported (its model code loads lazily, with the model)
  model         model and tokenizer loaded (from the converted copy of a GGUF)
  engine        drafter and engine built
  result        a request finished (the first, with --max-new-tokens 1: after the first step)
  line          its line written to stdout

>>> mark("cli")  # LOOKAHEAD_STARTUP_TRACE unset: nothing
"""
from __future__ import annotations

import gc
import os
import sys
import time
from contextlib import contextmanager

ENV = "LOOKAHEAD_STARTUP_TRACE"
PREFIX = "lookahead-startup"


def mark(phase: str) -> None:
    if os.environ.get(ENV) == "1":
        print(f"{PREFIX} {phase} {time.time():.6f}", file=sys.stderr, flush=True)


@contextmanager
def collector_paused():
    """The cyclic garbage collector off while the imports and the model load create the ~600,000
    objects that live as long as the run, then those objects out of its sight (`gc.freeze`; the
    caller unfreezes them when the run is over): its full sweeps over them took 1.1 s of a 5-6 s
    start on the 2-core VM. Objects are still freed by reference counting meanwhile, and the
    collector runs as before for everything made after.

    (Frozen until exit, the shutdown would skip its sweeps too, a second faster, but leave triton's
    nanobind objects uncollected, and nanobind prints a leak report for them.)"""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
