"""The finish rules, written once: what a sequence's sampled tokens become, and when it is done.

Every generation path (LLM.generate, streaming, chat, the CLI, the server) runs through the engine, and the
engine asks one `OutputState` per sequence:

- before sampling, `mask_logits`: end-of-generation tokens are forbidden until min_tokens are generated;
- after sampling, `push`: an end-of-generation or stop token finishes with "stop" (not part of the output;
  ignore_eos drops the EOG ids, explicit stop_token_ids still stop); the token limit (max_tokens, or what the
  context has left after the prompt when max_tokens is None) finishes with "length"; a stop string finishes
  with "stop" and is cut from the text (kept with include_stop_str_in_output); text that a stop string could
  still claim, or half a UTF-8 character, is held back, so a stream never shows what the result will not;
- when the context is full: with max_tokens given, the context shifts (llama.cpp's behaviour; the engine
  does it), else the sequence finishes with "length" (`may_shift`).

Nothing here touches a model or a KV cache, so all of it is tested with plain token ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..sampling import SampledToken, SamplingParams


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    generated_tokens: int = 0
    reused_tokens: int = 0  # prompt tokens found in the KV cache and not recomputed
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    speculative: object | None = None  # SpecStats when a proposer drafted tokens

    @property
    def prefill_tokens_per_second(self) -> float:
        evaluated = self.prompt_tokens - self.reused_tokens
        return evaluated / self.prefill_seconds if self.prefill_seconds > 0 else 0.0

    @property
    def decode_tokens_per_second(self) -> float:
        # the first generated token comes from the prefill's logits; each later one costs one decode step
        steps = max(self.generated_tokens - 1, 0)
        return steps / self.decode_seconds if self.decode_seconds > 0 else 0.0


@dataclass
class Generation:
    """One finished sample: its text, tokens, why it ended, and its stats."""
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None  # "stop" (end-of-generation token or stop string) | "length" | "abort"
    stop_reason: int | str | None = None  # the stop token id or stop string that ended it, as vLLM reports
    logprobs: list[SampledToken] | None = None
    stats: GenerationStats = field(default_factory=GenerationStats)


class TextDecoder(Protocol):
    """Token ids to text, one at a time, never half a character (tokenizer.StreamDecoder)."""
    def push(self, token_id: int) -> str: ...
    def flush(self) -> str: ...


class StopMatcher:
    """Finds stop strings in streamed text and holds back any tail that could still become one."""

    def __init__(self, stops: list[str]):
        self.stops = stops
        self.longest = max((len(s) for s in stops), default=0)

    def find(self, text: str, emitted: int) -> tuple[int, str] | None:
        """Earliest (index, stop) in text that ends after `emitted`; None if there is none."""
        start = max(0, emitted - self.longest + 1)
        hits = [(i, s) for s in self.stops if (i := text.find(s, start)) >= 0]
        return min(hits) if hits else None

    def safe_end(self, text: str) -> int:
        """Length of the prefix of text that no stop string can still claim."""
        for k in range(min(self.longest - 1, len(text)), 0, -1):
            tail = text[-k:]
            if any(s.startswith(tail) for s in self.stops):
                return len(text) - k
        return len(text)


class OutputState:
    """One sequence's output so far and its finish rules (see the module docstring)."""

    def __init__(self, params: SamplingParams, eog_ids: frozenset[int] | set[int], decoder: TextDecoder,
                 limit: int):
        """limit: tokens it may generate (max_tokens, or the context left after the prompt)."""
        self.result = Generation(logprobs=[] if params.logprobs is not None else None)
        stop_ids = set(params.stop_token_ids or ())
        if not params.ignore_eos:
            stop_ids |= set(eog_ids)
        self.stop_ids = stop_ids
        self._stop_ids_array = np.fromiter(stop_ids, dtype=np.int64) if stop_ids else None
        self.limit = limit
        self.done = False
        self._params = params
        self._matcher = StopMatcher(params.stop or [])
        self._decoder = decoder
        self._text, self._emitted = "", 0

    @property
    def n_generated(self) -> int:
        return self.result.stats.generated_tokens

    @property
    def remaining(self) -> int:
        """Tokens it may still generate."""
        return max(self.limit - self.n_generated, 0)

    @property
    def may_shift(self) -> bool:
        """A full context shifts only when max_tokens asked for more than fits (llama.cpp); else it ends."""
        return self._params.max_tokens is not None

    @property
    def stop_tokens_allowed(self) -> bool:
        return self.n_generated >= self._params.min_tokens

    def mask_logits(self, logits: np.ndarray) -> np.ndarray:
        """Forbid end-of-generation tokens until min_tokens have been generated (a copy when it masks)."""
        if self.stop_tokens_allowed or self._stop_ids_array is None:
            return logits
        logits = logits.copy()
        logits[self._stop_ids_array] = -np.inf
        return logits

    def push(self, sampled: SampledToken) -> str:
        """Take the next sampled token; returns the text that became final ("" if none). Sets `done`."""
        result, token = self.result, sampled.token_id
        if token in self.stop_ids:
            self.finish("stop", token)
            return ""
        result.stats.generated_tokens += 1
        result.token_ids.append(token)
        if result.logprobs is not None:
            result.logprobs.append(sampled)
        self._text += self._decoder.push(token)
        hit = self._matcher.find(self._text, self._emitted) if self._matcher.stops else None
        if hit is not None:
            cut, stop = hit
            if self._params.include_stop_str_in_output:
                cut += len(stop)
            self._text = self._text[:cut]
            self.finish("stop", stop)
            return self._advance(cut)
        delta = self._advance(self._matcher.safe_end(self._text))
        if result.stats.generated_tokens >= self.limit:
            self.finish("length")
        return delta

    def _advance(self, end: int) -> str:
        delta = self._text[self._emitted:end] if end > self._emitted else ""
        self._emitted = max(self._emitted, end)
        return delta

    def finish(self, reason: str, stop_reason: int | str | None = None) -> None:
        if not self.done:
            self.done = True
            self.result.finish_reason, self.result.stop_reason = reason, stop_reason

    def close(self) -> str:
        """Finish the text; returns what was held back (a partial character or stop-string prefix), except
        after an abort, which releases nothing more."""
        self.finish("length")
        if self.result.finish_reason == "abort":
            self.result.text = self._text[:self._emitted]
            return ""
        if not isinstance(self.result.stop_reason, str):  # nothing was cut at a stop string: release the rest
            self._text += self._decoder.flush()
        self.result.text = self._text
        return self._advance(len(self._text))
