"""Shared fixtures: tiny randomly initialised models (no weights needed) and the real SmolLM2."""
from __future__ import annotations

import functools
import os

import pytest
import torch

if not torch.cuda.is_available():
    # Triton reads this when it decorates a kernel: it must be set before any test module
    # (test_tree_attention, or test_docstrings importing every module) imports one.
    os.environ["TRITON_INTERPRET"] = "1"

TINY_ARCHS = ("llama", "qwen2", "gemma3")  # gemma2: see test_gemma.py (no SDPA in transformers)


def tiny_model(arch: str = "llama", seed: int = 0, vocab: int = 97, kv_heads: int = 2):
    """A 2-layer random causal LM with our attention hooked in; fp32, eval mode."""
    import transformers

    from lookahead.engine.attention import ATTENTION_NAME, register_attention

    register_attention()
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=2048,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0)
    # Gemma: one sliding-window layer (window 8, shorter than most test prompts) and one global
    # layer. Gemma-2 caps scores at 2; see below for making them reach it.
    gemma = dict(common, head_dim=16, sliding_window=8, layer_types=["sliding_attention", "full_attention"])
    config = {
        "llama": lambda: transformers.LlamaConfig(**common),
        "qwen2": lambda: transformers.Qwen2Config(**common),
        "gemma2": lambda: transformers.Gemma2Config(**gemma, attn_logit_softcapping=2.0),
        "gemma3": lambda: transformers.Gemma3TextConfig(**gemma),
    }[arch]()
    config._attn_implementation = ATTENTION_NAME
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=ATTENTION_NAME)
    # Random weights give near-uniform logits; sharpen them so greedy is not decided by float noise.
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
        if arch == "gemma2":  # random scores are ~0.01, where a cap does nothing: x8 on q and k
            for layer in model.model.layers:  # puts them at ~1, where capping at 2 moves the logits by ~4
                layer.self_attn.q_proj.weight.mul_(8.0)
                layer.self_attn.k_proj.weight.mul_(8.0)
    return model.eval()


@functools.lru_cache(maxsize=None)
def plain_case(model_seed: int, prompt_seed: int, n_prompts: int, min_len: int, max_len: int, max_new: int):
    """(model, prompts, answers): a tiny fp32 Llama, random prompts, their plain greedy outputs; made once."""
    import numpy as np

    from lookahead.engine import Engine, EngineConfig, SamplingParams

    model = tiny_model(seed=model_seed)
    g = np.random.default_rng(prompt_seed)
    vocab = model.config.vocab_size
    prompts = {f"r{i}": g.integers(3, vocab, int(g.integers(min_len, max_len))).tolist() for i in range(n_prompts)}
    out = Engine(model, config=EngineConfig(kv_cache_tokens=2048, controller="off")).run(
        prompts, SamplingParams(max_new_tokens=max_new))
    return model, prompts, {r: q.output_ids for r, q in out.items()}


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: tiny forwards on a shared 2-core box run faster so."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct, fp32 on the CPU (converted once into the user cache)."""
    from lookahead.models import ModelError, load_model

    try:
        return load_model(None, dtype="float32", device="cpu")
    except ModelError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A random 2-layer Llama with SmolLM2's real tokenizer (and chat template), saved as a model folder."""
    import transformers

    from lookahead.models import ModelError, bundled_gguf, convert_gguf

    try:
        real = convert_gguf(bundled_gguf())
    except ModelError as e:
        pytest.skip(str(e))
    tok = transformers.AutoTokenizer.from_pretrained(real)
    model = tiny_model(vocab=len(tok))
    model.config.eos_token_id = tok.eos_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


class AnswerDrafter:
    """Base of the test drafters that know each request's plain greedy answer.

    It follows how far each request has got; `truth(request_id)` is the rest of its
    answer, from which a subclass's `propose` builds right, wrong or partly right trees.
    """

    def __init__(self, answers: dict[str, list[int]]):
        self.answers = answers
        self.pos: dict[str, int] = {}

    def truth(self, request_id) -> list[int]:
        return self.answers.get(request_id, [])[self.pos[request_id]:]

    def start(self, request_id, prompt_ids):
        self.pos[request_id] = 0

    def update(self, request_id, accepted_ids):
        self.pos[request_id] += len(accepted_ids)

    def stop(self, request_id):
        del self.pos[request_id]

