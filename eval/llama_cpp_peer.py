"""llama.cpp greedy decoding through llama-cpp-python, the CPU peer of the end-to-end benchmark.

It runs the GGUF file as llama.cpp runs it: its quantised weights (the bundled SmolLM2 is
Q4_1) in llama.cpp's own kernels, whereas our engine de-quantises the same file into bf16 or
fp32 tensors. So its output is its own greedy output, not ours, and is compared with nothing.
Each request starts from an empty KV cache (no prompt reuse from the request before), on the
given thread count for both the prompt and the decode.

llama-cpp-python is the optional extra `llamacpp`; it builds llama.cpp from source (a C++
compiler and cmake; about 10 minutes on 2 cores):

    pip install 'lookahead[llamacpp]'

>>> unavailable(Path("SmolLM2/model.safetensors"))
'llama.cpp runs GGUF files, and the model is model.safetensors'
>>> from lookahead.models import bundled_gguf                         # doctest: +SKIP
>>> peer = LlamaCppGreedy(bundled_gguf(), threads=2, n_ctx=512)       # doctest: +SKIP
>>> ids, forwards = peer.generate([1, 9690, 2], 4, stop_ids={2})       # doctest: +SKIP
>>> len(ids) <= 4 and forwards == len(ids)                            # doctest: +SKIP
True
"""
from __future__ import annotations

from pathlib import Path

INSTALL = ("llama.cpp needs the extra `llamacpp`: pip install 'lookahead[llamacpp]' "
           "(llama-cpp-python, built from source with a C++ compiler and cmake)")


def unavailable(model_path: Path) -> str | None:
    """Why the peer cannot run on this model here, or None."""
    if model_path.suffix != ".gguf":
        return f"llama.cpp runs GGUF files, and the model is {model_path.name}"
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return INSTALL
    return None


class LlamaCppGreedy:
    """One llama.cpp context for a whole run; `generate` decodes one request greedily from an empty cache."""

    def __init__(self, gguf: Path, threads: int, n_ctx: int):
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(gguf), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                         n_batch=min(n_ctx, 512), verbose=False)

    def generate(self, ids: list[int], n: int, stop_ids: set[int]) -> tuple[list[int], int]:
        """Up to n greedy tokens after `ids`, ending with the first of `stop_ids` (kept, as our engine
        keeps it); forwards: one per output token, the first being the prompt's."""
        self.llm.reset()
        out = []
        for token in self.llm.generate(ids, top_k=1, temp=0.0, reset=True):
            out.append(token)
            if len(out) == n or token in stop_ids:
                break
        return out, len(out)
