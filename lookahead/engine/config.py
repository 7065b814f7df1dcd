"""The engine's and a request's options: each one's default and valid range, checked in one place.

`EngineConfig` and `SamplingParams` check their values when made, whoever makes them: the
CLI (before the model loads, naming the flag), the Python API, a request line (a bad value
fails that request alone). No torch here, so the CLI checks its flags at once.

>>> SamplingParams(top_p=5)
Traceback (most recent call last):
lookahead.engine.config.RequestError: top_p must be in (0, 1], got 5
>>> try:
...     EngineConfig(max_nodes=2000)
... except OptionError as e:
...     print(e.field, "|", e.rule)
max_nodes | must be in [0, 1024], got 2000
"""
from __future__ import annotations

from dataclasses import dataclass, fields


class OptionError(ValueError):
    """An option value out of its range or of the wrong type; `field` names the option, `rule` the rest."""

    def __init__(self, field: str, rule: str):
        super().__init__(f"{field} {rule}")
        self.field, self.rule = field, rule


class ConfigError(OptionError):
    """A bad EngineConfig value (the whole engine's)."""


class RequestError(OptionError):
    """A request that cannot be served (one line for the user); other requests go on."""

    def __init__(self, message: str, rule: str | None = None):
        if rule is None:  # a whole message about the request, not about one option
            ValueError.__init__(self, message)
            self.field, self.rule = None, message
        else:
            super().__init__(message, rule)


@dataclass(frozen=True)
class Range:
    """Valid values: a number type and bounds (None: unbounded; lo_open: lo itself excluded; optional: None too)."""

    kind: type
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    optional: bool = False

    def rule(self, value) -> str | None:
        """None if `value` is valid, else what is wrong ("must be in [0, 1024], got 2000")."""
        if value is None and self.optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float) if self.kind is float else int):
            return f"must be {'a number' if self.kind is float else 'an integer'}, got {value!r}"
        low_ok = self.lo is None or (value > self.lo if self.lo_open else value >= self.lo)
        if low_ok and (self.hi is None or value <= self.hi):
            return None
        if self.hi is None:
            return f"must be {'>' if self.lo_open else '>='} {self.lo}, got {value}"
        return f"must be in {'(' if self.lo_open else '['}{self.lo}, {self.hi}], got {value}"


def _check(obj, ranges: dict[str, Range], error: type[OptionError]) -> None:
    for f in fields(obj):
        if f.name in ranges and (rule := ranges[f.name].rule(getattr(obj, f.name))) is not None:
            raise error(f.name, rule)


# The names every surface accepts (CLI flags, the Python API, request lines), defined once here.
CONTROLLERS = ("goodput", "fixed", "off")
DRAFTERS = ("none", "prompt-lookup", "suffix", "retrieval", "source", "recycling", "auto")  # drafters.make_drafter
PEER_DRAFTERS = ("hf-chain", "arctic-suffix", "arctic-suffix-chain")  # peers' rules, replay only
DTYPES = ("auto", "float32", "bfloat16", "float16")  # models.pick_dtype
DEVICES = ("auto", "cpu", "cuda")  # models.pick_device
TASKS = ("chat", "rag", "gec")  # run/tasks.py

ENGINE_RANGES = {
    "max_nodes": Range(int, 0, 1024),
    "max_depth": Range(int, 0, 1024),
    "max_batch_size": Range(int, 1, 4096),
    "kv_cache_tokens": Range(int, 1),
    "block_size": Range(int, 1, 4096),
    "prefill_chunk": Range(int, 1),
}


@dataclass
class EngineConfig:
    max_nodes: int = 32  # draft nodes verified per request and step at most
    max_depth: int = 16  # deepest draft node
    controller: str = "goodput"  # goodput: nodes worth their cost; fixed: the whole budget; off: plain decoding
    max_batch_size: int = 8  # requests decoded together
    kv_cache_tokens: int = 32768  # KV cache size, in tokens over all requests
    block_size: int = 16  # KV positions per cache block
    prefill_chunk: int = 1024  # prompt tokens per forward at most
    exact: bool = True  # tree-invariant verification: output == plain decoding bit for bit, in any dtype

    def __post_init__(self):
        _check(self, ENGINE_RANGES, ConfigError)
        if self.controller not in CONTROLLERS:
            raise ConfigError("controller", f"must be one of {', '.join(CONTROLLERS)}, got {self.controller!r}")


SAMPLING_RANGES = {
    "max_new_tokens": Range(int, 1, 1 << 20),
    "temperature": Range(float, 0),
    "top_p": Range(float, 0, 1, lo_open=True),
    "seed": Range(int),
    "top_k": Range(int, 0),
    "min_p": Range(float, 0, 1),
    "logprobs": Range(int, 0, 20, optional=True),
}
MAX_STOP_STRINGS = 4  # as OpenAI's API


@dataclass
class SamplingParams:
    """How a request's tokens are chosen. Temperature 0 is greedy (top_k, top_p and min_p then change
    nothing); otherwise each token is drawn from softmax(logits / temperature) cut to its top_k tokens,
    then to the top_p mass, then to the tokens of at least min_p times the likeliest one's probability.

    stop: strings that end the output (not included in its text); logprobs: None, or how many
    alternatives to report beside each output token's log-probability (the model's own
    distribution, before temperature and the cuts).
    """

    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0
    top_k: int = 0  # 0: no cut
    min_p: float = 0.0  # 0: no cut
    stop: tuple[str, ...] = ()
    logprobs: int | None = None

    def __post_init__(self):
        _check(self, SAMPLING_RANGES, RequestError)
        if isinstance(self.stop, str):
            self.stop = (self.stop,)
        if not (isinstance(self.stop, (list, tuple)) and len(self.stop) <= MAX_STOP_STRINGS
                and all(isinstance(s, str) and s for s in self.stop)):
            raise RequestError("stop", f"must be a string or a list of at most {MAX_STOP_STRINGS} non-empty "
                                       f"strings, got {self.stop!r}")
        self.stop = tuple(self.stop)
