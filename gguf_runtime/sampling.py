"""Next-token sampling: small pure functions over a float32 logits vector, composed in llama.cpp's order.

Every filter takes a 1-D float32 logits vector (vocab-sized; removed tokens are ``-inf``) and returns a new
one; nothing is modified in place. `Sampler` chains them in llama.cpp's default sampler order::

    logit_bias -> allowed_token_ids -> penalties -> top_k -> typical_p -> top_p -> min_p -> temperature -> sample

(llama.cpp ``common_params_sampling::samplers`` = penalties, dry, top_n_sigma, top_k, typ_p, top_p, min_p, xtc,
temperature, then ``dist``; its logit-bias sampler runs first. DRY, top-n-sigma, XTC and mirostat are not
implemented.) vLLM orders them differently (temperature before min_p/top_k/top_p), so at temperature != 1 with
filters on, results follow llama.cpp, not vLLM.

Defaults are vLLM's, so a vLLM script behaves the same after changing only its import and model path.
llama.cpp's defaults differ; `SamplingParams.llama_cpp_defaults()` gives them:

    ===================  ==============  =================
    parameter            ours (vLLM)     llama.cpp
    ===================  ==============  =================
    temperature          1.0             0.8
    top_k                -1 (off)        40
    top_p                1.0 (off)       0.95
    min_p                0.0 (off)       0.05
    typical_p            1.0 (off)       1.0 (off)
    repetition_penalty   1.0 (off)       1.0 (off; older releases 1.1)
    penalty_last_n       64              64 (repeat_last_n; 0 = off, -1 = whole context)
    ===================  ==============  =================

Penalties follow llama.cpp, not vLLM: all three apply to the last ``penalty_last_n`` tokens of the history
(prompt included), where vLLM applies repetition_penalty to the whole prompt + output and presence/frequency to
the output only. Log-probabilities are of the raw model distribution, like vLLM's default.

Checked against llama.cpp's own samplers (llama-cpp-python 0.3.36, 1500 random logit vectors of 20-3000 tokens):
top_k, min_p, temperature and penalties give the same kept set and bit-identical logits every time; top_p and
typical_p kept one token more at the boundary in 1 and 5 of the 1500 (float32 rounding of llama.cpp's
sequential softmax and running sum). The random draw itself is numpy's, so seeds do not reproduce llama.cpp's
mt19937 choices.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np

from .structured.params import StructuredOutputsParams, coerce as _structured_outputs

_NEG_INF = np.float32(-np.inf)
GREEDY_TEMPERATURE = 1e-5  # below this, temperature means greedy (vLLM's _SAMPLING_EPS): 1/t would overflow

# vLLM SamplingParams fields we deliberately do not accept, so a script using them fails with a clear reason.
_VLLM_UNSUPPORTED = frozenset({
    "best_of", "prompt_logprobs", "bad_words", "logits_processors",
    "truncate_prompt_tokens", "output_kind", "detokenize", "spaces_between_special_tokens", "extra_args",
    "use_beam_search", "length_penalty", "early_stopping", "flat_logprobs",
})


# --------------------------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SamplingParams:
    """vLLM-shaped sampling parameters (defaults are vLLM's; see the module docstring for llama.cpp's).

    ``stop`` is normalised to a list of strings, ``stop_token_ids`` to a list of ints and ``logit_bias`` to a
    ``{int: float}`` dict (string keys, as JSON gives them, are converted). ``top_k`` 0 or -1 means off.
    ``penalty_last_n`` is llama.cpp's repeat window: 0 disables penalties, -1 means the whole history.
    ``max_tokens=None`` means "until the context is full". ``stop``, ``stop_token_ids``, ``ignore_eos``,
    ``max_tokens``, ``min_tokens`` and ``skip_special_tokens`` are honoured by the generation loop, the rest by
    `Sampler`. ``structured_outputs`` (or vLLM's older ``guided_decoding``, folded into it) constrains the text to
    a JSON schema, regex, choice or grammar; the engine compiles it when the request is added.
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    typical_p: float = 1.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_last_n: int = 64
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    max_tokens: int | None = 16
    min_tokens: int = 0
    logprobs: int | None = None
    logit_bias: dict[int, float] | None = None
    allowed_token_ids: list[int] | None = None
    skip_special_tokens: bool = True
    structured_outputs: StructuredOutputsParams | None = None
    guided_decoding: StructuredOutputsParams | None = None  # vLLM's older name: folded into structured_outputs

    def __new__(cls, *args, **kwargs):
        # dataclass's own message for an unknown keyword names neither the supported fields nor the reason.
        unknown = sorted(set(kwargs) - {f.name for f in fields(cls)})
        if unknown:
            vllm_only = [name for name in unknown if name in _VLLM_UNSUPPORTED]
            reason = (f"vLLM option(s) {', '.join(vllm_only)} not supported by gguf-runtime; " if vllm_only
                      else "")
            raise TypeError(f"SamplingParams got unexpected keyword argument(s) {', '.join(unknown)}: {reason}"
                            f"supported: {', '.join(f.name for f in fields(cls))}")
        return super().__new__(cls)

    def __post_init__(self) -> None:
        _check_int("n", self.n, self.n >= 1, ">= 1")
        _check_float("temperature", self.temperature, lambda v: v >= 0, ">= 0 (0 = greedy)")
        _check_float("top_p", self.top_p, lambda v: 0 < v <= 1, "in (0, 1]")
        _check_int("top_k", self.top_k, self.top_k >= -1, "-1, 0 (both = off) or >= 1")
        _check_float("min_p", self.min_p, lambda v: 0 <= v <= 1, "in [0, 1]")
        _check_float("typical_p", self.typical_p, lambda v: 0 < v <= 1, "in (0, 1]")
        _check_float("repetition_penalty", self.repetition_penalty, lambda v: v > 0, "> 0 (1 = off)")
        _check_float("presence_penalty", self.presence_penalty, lambda v: -2 <= v <= 2, "in [-2, 2]")
        _check_float("frequency_penalty", self.frequency_penalty, lambda v: -2 <= v <= 2, "in [-2, 2]")
        _check_int("penalty_last_n", self.penalty_last_n, self.penalty_last_n >= -1,
                   ">= -1 (-1 = whole history, 0 = off)")
        if self.seed is not None:
            _check_int("seed", self.seed, self.seed >= 0, "None or >= 0")
        if self.max_tokens is not None:
            _check_int("max_tokens", self.max_tokens, self.max_tokens >= 1, "None or >= 1")
        _check_int("min_tokens", self.min_tokens, self.min_tokens >= 0, ">= 0")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens must be <= max_tokens ({self.max_tokens}), got {self.min_tokens}")
        if self.logprobs is not None:
            _check_int("logprobs", self.logprobs, self.logprobs >= 0, "None or >= 0")
        object.__setattr__(self, "stop", _normalise_stop(self.stop))
        object.__setattr__(self, "stop_token_ids", _token_id_list("stop_token_ids", self.stop_token_ids))
        if self.allowed_token_ids is not None:
            allowed = _token_id_list("allowed_token_ids", self.allowed_token_ids)
            if not allowed:
                raise ValueError("allowed_token_ids must be None or a non-empty list of token ids")
            object.__setattr__(self, "allowed_token_ids", allowed)
        object.__setattr__(self, "logit_bias", _normalise_logit_bias(self.logit_bias))
        structured = _structured_outputs(self.structured_outputs, "structured_outputs")
        guided = _structured_outputs(self.guided_decoding, "guided_decoding")
        if structured is not None and guided is not None:
            raise ValueError("give structured_outputs or guided_decoding (its older name), not both")
        object.__setattr__(self, "structured_outputs", structured or guided)
        object.__setattr__(self, "guided_decoding", None)

    @property
    def greedy(self) -> bool:
        """True when sampling reduces to argmax (temperature below `GREEDY_TEMPERATURE`, or top_k 1)."""
        return self.temperature < GREEDY_TEMPERATURE or self.top_k == 1

    @classmethod
    def llama_cpp_defaults(cls, **overrides) -> SamplingParams:
        """llama.cpp's CLI/server defaults: temp 0.8, top_k 40, top_p 0.95, min_p 0.05, repeat_last_n 64."""
        defaults = dict(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, typical_p=1.0,
                        repetition_penalty=1.0, penalty_last_n=64)
        return cls(**{**defaults, **overrides})


def _check_int(name: str, value, ok: bool, allowed: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer {allowed}, got {value!r}")
    if not ok:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def _check_float(name: str, value, ok, allowed: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number {allowed}, got {value!r}")
    if not ok(value):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def _normalise_stop(stop) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    stop = list(stop)
    if not all(isinstance(s, str) and s for s in stop):
        raise ValueError(f"stop must be None, a non-empty string or a list of non-empty strings, got {stop!r}")
    return stop


def _token_id_list(name: str, ids) -> list[int]:
    ids = [] if ids is None else list(ids)
    for token in ids:
        _check_int(name, token, token >= 0, "a list of token ids >= 0")
    return [int(t) for t in ids]


def _normalise_logit_bias(bias) -> dict[int, float] | None:
    if bias is None:
        return None
    if not isinstance(bias, Mapping):
        raise ValueError(f"logit_bias must be None or a mapping {{token_id: bias}}, got {bias!r}")
    out: dict[int, float] = {}
    for key, value in bias.items():
        try:
            token = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"logit_bias keys must be token ids, got {key!r}") from None
        if token < 0:
            raise ValueError(f"logit_bias keys must be token ids >= 0, got {key!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or math.isnan(value) or value == math.inf:
            raise ValueError(f"logit_bias[{key!r}] must be a number (-inf bans the token), got {value!r}")
        out[token] = float(value)
    return out


# --------------------------------------------------------------------------------------------------------------
# Pure transforms: float32 logits in, new float32 logits out (-inf = removed)
# --------------------------------------------------------------------------------------------------------------

def _keep_only(logits: np.ndarray, ids: np.ndarray) -> np.ndarray:
    out = np.full_like(logits, _NEG_INF)
    out[ids] = logits[ids]
    return out


def _check_ids(what: str, ids: np.ndarray, vocab_size: int) -> None:
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        bad = ids[(ids < 0) | (ids >= vocab_size)][0]
        raise ValueError(f"{what} contains token id {int(bad)} outside the vocabulary [0, {vocab_size})")


def _support(logits: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """``(ids, values)`` of the finite logits; ids is None when all are finite, sparing vocab-sized copies
    (fresh multi-megabyte temporaries cost page faults on every token)."""
    finite = np.isfinite(logits)
    if finite.all():
        return None, logits
    ids = np.flatnonzero(finite)
    if ids.size == 0:
        raise ValueError("every token was removed: no finite logit left to sample from")
    return ids, logits[ids]


def _global(ids: np.ndarray | None, local):
    """Map indices into `_support`'s values back to token ids."""
    return local if ids is None else ids[local]


def _softmax_of(values: np.ndarray) -> np.ndarray:
    """float32 probabilities of finite logits: exp in float32 (as llama.cpp; numpy's float64 exp is ~10x
    slower), normaliser summed in float64; one temporary, worked in place."""
    probs = values - values.max()
    np.exp(probs, out=probs)
    probs /= probs.sum(dtype=np.float64)
    return probs


def _smallest_ids(keys: np.ndarray, m: int) -> np.ndarray:
    """Indices of the m smallest keys, ascending by index; among equal keys at the boundary the lowest indices
    win. O(n) with a partition, so a 262k vocabulary is never fully sorted for a small m."""
    n = keys.shape[0]
    if m >= n:
        return np.arange(n)
    kth = np.partition(keys, m - 1)[m - 1]
    below = np.flatnonzero(keys < kth)
    ties = np.flatnonzero(keys == kth)[: m - below.size]
    return np.sort(np.concatenate([below, ties]))


def _sorted_by_key(keys: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """`ids` (ascending) ordered by ascending key; the stable sort keeps ties in ascending index order."""
    return ids[np.argsort(keys[ids], kind="stable")]


def _smallest_until_mass(keys: np.ndarray, probs: np.ndarray, p: float, strict: bool) -> np.ndarray:
    """Indices, in ascending key order, of the shortest prefix whose probability mass reaches p (exceeds p when
    `strict`). Only a growing head is sorted: nuclei are usually tiny next to the vocabulary."""
    head_size = 256
    while True:
        head = _sorted_by_key(keys, _smallest_ids(keys, head_size))
        mass = np.cumsum(probs[head], dtype=np.float64)
        if (mass[-1] > p if strict else mass[-1] >= p) or head.size == keys.size:
            break
        head_size *= 8
    n_keep = int(np.searchsorted(mass, p, side="right" if strict else "left")) + 1
    return head[: min(n_keep, head.size)]


def apply_logit_bias(logits: np.ndarray, bias: Mapping[int, float] | None) -> np.ndarray:
    """Add ``bias[token]`` to each listed token's logit (``-inf`` bans it), like llama.cpp's logit-bias sampler."""
    if not bias:
        return logits
    ids = np.fromiter(bias.keys(), dtype=np.int64, count=len(bias))
    _check_ids("logit_bias", ids, logits.shape[0])
    out = logits.copy()
    out[ids] += np.fromiter(bias.values(), dtype=np.float32, count=len(bias))
    return out


def restrict_to(logits: np.ndarray, allowed_token_ids: Sequence[int] | None) -> np.ndarray:
    """Remove every token not in `allowed_token_ids` (vLLM's ``allowed_token_ids``)."""
    if allowed_token_ids is None:
        return logits
    ids = np.unique(np.asarray(allowed_token_ids, dtype=np.int64))
    _check_ids("allowed_token_ids", ids, logits.shape[0])
    return _keep_only(logits, ids)


def apply_penalties(logits: np.ndarray, history_window: Sequence[int] | np.ndarray, repetition: float = 1.0,
                    presence: float = 0.0, frequency: float = 0.0) -> np.ndarray:
    """llama.cpp's penalties over the tokens in `history_window` (the caller slices the last n).

    For each distinct token t seen c times: a positive logit is divided by `repetition`, a non-positive one
    multiplied by it; then ``c * frequency + presence`` is subtracted. Arithmetic is float32, as in llama.cpp.
    """
    window = np.asarray(history_window, dtype=np.int64)
    if window.size == 0 or (repetition == 1.0 and presence == 0.0 and frequency == 0.0):
        return logits
    ids, counts = np.unique(window, return_counts=True)
    _check_ids("history_window", ids, logits.shape[0])
    seen = logits[ids]
    seen = np.where(seen <= 0, seen * np.float32(repetition), seen / np.float32(repetition))
    seen = seen - (counts.astype(np.float32) * np.float32(frequency) + np.float32(presence))
    out = logits.copy()
    out[ids] = seen
    return out


def top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """Keep the k highest logits (ties at the boundary: lowest ids). k <= 0 means off."""
    if k <= 0 or k >= logits.shape[0]:
        return logits
    return _keep_only(logits, _smallest_ids(-logits, k))


def typical_p(logits: np.ndarray, p: float) -> np.ndarray:
    """Locally typical sampling: keep the tokens whose surprisal -log p_i is closest to the entropy H, in that
    order, until their mass first exceeds p (strictly, as llama.cpp). p >= 1 means off."""
    if p >= 1.0:
        return logits
    ids, values = _support(logits)
    probs = _softmax_of(values)
    with np.errstate(divide="ignore"):
        surprisal = -np.log(probs)
    positive = probs > 0
    entropy = float(np.dot(probs[positive].astype(np.float64), surprisal[positive]))
    kept = _smallest_until_mass(np.abs(surprisal - np.float32(entropy)), probs, p, strict=True)
    return _keep_only(logits, _global(ids, kept))


def top_p(logits: np.ndarray, p: float) -> np.ndarray:
    """Nucleus sampling: keep the most probable tokens until their mass first reaches p (>=, as llama.cpp).
    p >= 1 means off."""
    if p >= 1.0:
        return logits
    ids, values = _support(logits)
    kept = _smallest_until_mass(-values, _softmax_of(values), p, strict=False)
    return _keep_only(logits, _global(ids, kept))


def min_p(logits: np.ndarray, p: float) -> np.ndarray:
    """Keep tokens with probability >= p * max probability, i.e. logit >= max logit + log p. p <= 0 means off."""
    if p <= 0.0:
        return logits
    threshold = logits.max() + np.float32(math.log(p))
    return np.where(logits >= threshold, logits, _NEG_INF)


def temperature(logits: np.ndarray, t: float) -> np.ndarray:
    """Divide logits by t. t <= 0 keeps only the highest logit (the lowest id among ties), as llama.cpp."""
    if t <= 0.0:
        return _keep_only(logits, np.array([int(np.argmax(logits))]))
    if t == 1.0:
        return logits
    return logits / np.float32(t)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities (float32, vocab-sized, normalised in float64; exactly 0 where the logit is -inf)."""
    ids, values = _support(logits)
    if ids is None:
        return _softmax_of(values)
    probs = np.zeros_like(logits)
    probs[ids] = _softmax_of(values)
    return probs


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities (float32; the normaliser is summed in float64)."""
    out = logits - logits.max()
    out -= np.float32(math.log(np.exp(out).sum(dtype=np.float64)))
    return out


def logprobs_topn(logits: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The n most probable tokens and their log-probabilities under softmax(logits), best first (ties: lowest
    id). Returns ``(token_ids int64, logprobs float32)``."""
    return _best_of(log_softmax(logits), n)


def _best_of(logp: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    ids = _sorted_by_key(-logp, _smallest_ids(-logp, n)) if n > 0 else np.zeros(0, dtype=np.int64)
    return ids.astype(np.int64), logp[ids]


# --------------------------------------------------------------------------------------------------------------
# The sampler
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SampledToken:
    """One sampled token; the logprob fields are set when ``SamplingParams.logprobs`` is not None.

    Log-probabilities are of the raw model distribution (before bias, penalties and filters), like vLLM's
    default ``raw_logprobs``; ``top_logprobs`` holds ``SamplingParams.logprobs`` (id, logprob) pairs, best first.
    """

    token_id: int
    logprob: float | None = None
    top_logprobs: tuple[tuple[int, float], ...] | None = None


def sampled_token(token_id: int, raw_logits: np.ndarray, logprobs: int | None) -> SampledToken:
    """`token_id` with vLLM-style log-probabilities of the raw logits (none when `logprobs` is None)."""
    if logprobs is None:
        return SampledToken(token_id)
    logp = log_softmax(np.asarray(raw_logits, dtype=np.float32))
    ids, top = _best_of(logp, logprobs)
    return SampledToken(token_id, float(logp[token_id]), tuple(zip(ids.tolist(), top.tolist())))


class Sampler:
    """Turns a logits vector plus the token history into the next token, with a `numpy.random.Generator` seeded
    from ``params.seed`` (None: fresh OS entropy). Same seed and inputs give the same tokens.

    `history` is every token so far (llama.cpp feeds prompt tokens to its penalty window too); the penalty
    window is its last ``penalty_last_n`` tokens. `stream` separates the ``n`` parallel samples of one request:
    each gets an independent random stream derived from the same seed.
    """

    def __init__(self, params: SamplingParams | None = None, *, stream: int = 0) -> None:
        self.params = params if params is not None else SamplingParams()
        self.rng = np.random.default_rng(np.random.SeedSequence(self.params.seed, spawn_key=(stream,)))
        self._cdf = np.empty(0, dtype=np.float64)  # reused across tokens: see `_support`

    def penalty_window(self, history: Sequence[int] | np.ndarray) -> np.ndarray:
        window = np.asarray(history, dtype=np.int64)
        last_n = self.params.penalty_last_n
        if last_n == 0:
            return window[:0]
        return window if last_n == -1 else window[-last_n:]

    def processed_logits(self, logits: np.ndarray, history: Sequence[int] | np.ndarray = ()) -> np.ndarray:
        """Logits after every transform, in llama.cpp's order (removed tokens are -inf)."""
        p = self.params
        x = np.asarray(logits, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"logits must be a 1-D vector, got shape {x.shape}")
        x = apply_logit_bias(x, p.logit_bias)
        x = restrict_to(x, p.allowed_token_ids)
        x = apply_penalties(x, self.penalty_window(history), p.repetition_penalty, p.presence_penalty,
                            p.frequency_penalty)
        x = top_k(x, p.top_k)
        x = typical_p(x, p.typical_p)
        x = top_p(x, p.top_p)
        x = min_p(x, p.min_p)
        return temperature(x, 0.0 if p.temperature < GREEDY_TEMPERATURE else p.temperature)

    def probs_for(self, logits: np.ndarray, history: Sequence[int] | np.ndarray = ()) -> np.ndarray:
        """The final distribution the next token is drawn from (float32, vocab-sized). Speculative decoding uses
        this for the target and draft distributions p and q."""
        return softmax(self.processed_logits(logits, history))

    def draw(self, probs: np.ndarray) -> int:
        """Draw one index from non-negative weights (need not be normalised; zeros are never drawn).
        Speculative decoding draws from its residual distribution max(0, p - q) with this."""
        return self._pick(np.asarray(probs))

    def _pick(self, weights: np.ndarray) -> int:
        n = weights.shape[0]
        if self._cdf.size < n:
            self._cdf = np.empty(n, dtype=np.float64)
        cdf = np.cumsum(weights, dtype=np.float64, out=self._cdf[:n])
        if not cdf[-1] > 0:
            raise ValueError("cannot draw from a distribution with no positive weight")
        # side="right" never lands on a zero-weight entry: its cdf equals its predecessor's.
        pick = int(np.searchsorted(cdf, self.rng.random() * cdf[-1], side="right"))
        if pick == n:  # u * total rounded up to total
            pick = int(np.flatnonzero(weights > 0)[-1])
        return pick

    def sample(self, logits: np.ndarray, history: Sequence[int] | np.ndarray = ()) -> int:
        """The next token id. Greedy settings reduce to argmax (ties: lowest id) without consuming randomness."""
        ids, values = _support(self.processed_logits(logits, history))
        if values.size == 1:
            return int(_global(ids, 0))
        return int(_global(ids, self._pick(_softmax_of(values))))

    def step(self, logits: np.ndarray, history: Sequence[int] | np.ndarray = ()) -> SampledToken:
        """`sample` plus, when ``params.logprobs`` is set, the raw log-probabilities vLLM reports."""
        return sampled_token(self.sample(logits, history), logits, self.params.logprobs)
