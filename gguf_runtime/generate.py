"""The generation loop: prefill, sample, decode; stop tokens and stop strings; streaming text; stats."""

from __future__ import annotations

import time
from itertools import chain
from dataclasses import dataclass, field
from typing import Generator, Iterator

import numpy as np

from .sampling import SampledToken, Sampler, SamplingParams
from .session import ContextLengthError, Session
from .tokenizer import StreamDecoder, Tokenizer


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    generated_tokens: int = 0
    reused_tokens: int = 0  # prompt tokens found in the KV cache and not recomputed
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    speculative: object | None = None  # SpecStats when a drafter proposed tokens

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
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None  # "stop" (end-of-generation token or stop string) | "length"
    stop_reason: int | str | None = None  # the stop token id or stop string that ended it, as vLLM reports
    logprobs: list[SampledToken] | None = None
    stats: GenerationStats = field(default_factory=GenerationStats)


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


class OutputBuilder:
    """One request's output from its sampled tokens: end-of-generation and stop tokens, stop strings (never
    leaked into the text), the token limit, logprobs, and the text deltas to stream. Shared by the
    single-sequence loop below and the batch scheduler."""

    def __init__(self, tokenizer: Tokenizer, params: SamplingParams, limit: int):
        self.result = Generation(logprobs=[] if params.logprobs is not None else None)
        stop_ids = set(params.stop_token_ids or ())
        if not params.ignore_eos:
            stop_ids |= set(tokenizer.eog_ids)
        self.stop_ids = stop_ids
        self.stop_ids_array = np.fromiter(stop_ids, dtype=np.int64) if stop_ids else None
        self.limit = limit
        self.done = False
        self._params = params
        self._matcher = StopMatcher(params.stop or [])
        self._decoder = StreamDecoder(tokenizer, skip_special=params.skip_special_tokens)
        self._text, self._emitted = "", 0

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
        """Finish the text; returns what was held back (a partial character or stop-string prefix)."""
        self.finish("length")
        if not isinstance(self.result.stop_reason, str):  # nothing was cut at a stop string: release the rest
            self._text += self._decoder.flush()
        self.result.text = self._text
        return self._advance(len(self._text))


def generate(session: Session, tokenizer: Tokenizer, prompt: list[int], params: SamplingParams,
             sampler: Sampler | None = None, n_keep: int = 0, drafter=None) -> Generator[str, None, Generation]:
    """Yield text deltas as they become final; return the Generation (`result = yield from generate(...)`).

    The cache is reused for the longest common prefix with what it holds. When the context fills during
    generation it shifts (keeping n_keep tokens) if max_tokens asks for more than fits, as llama.cpp does;
    with max_tokens=None generation stops at the end of the context instead. A drafter (see speculative.py)
    proposes several tokens per target pass; the output is what plain sampling would give.
    """
    sampler = sampler or Sampler(params)
    limit = params.max_tokens if params.max_tokens is not None else session.n_ctx - len(prompt)
    out = OutputBuilder(tokenizer, params, limit)
    stats = out.result.stats
    stats.prompt_tokens = len(prompt)
    history = list(prompt)

    t0 = time.perf_counter()
    logits = session.eval_prompt(prompt)[-1]
    stats.reused_tokens = session.reused
    t1 = time.perf_counter()
    stats.prefill_seconds = t1 - t0
    stats.speculative = drafter.stats if drafter is not None else None
    args = (session, sampler, logits, history, n_keep, params.min_tokens, out.stop_ids_array)
    steps = drafter.steps(*args) if drafter is not None else plain_steps(*args)

    for sampled in chain.from_iterable(steps):
        history.append(sampled.token_id)
        delta = out.push(sampled)
        if delta:
            yield delta
        if out.done:
            break
        if session.cache.free == 0 and params.max_tokens is None:
            break
    steps.close()  # the steps running out means the context could not make room: "length" below
    tail = out.close()
    if tail:
        yield tail
    stats.decode_seconds = time.perf_counter() - t1
    return out.result


def mask_stop_tokens(logits: np.ndarray, n_generated: int, min_tokens: int, stop_ids: np.ndarray | None) -> np.ndarray:
    """Forbid end-of-generation tokens until min_tokens have been generated."""
    if n_generated >= min_tokens or stop_ids is None:
        return logits
    logits = logits.copy()
    logits[stop_ids] = -np.inf
    return logits


def plain_steps(session: Session, sampler: Sampler, logits: np.ndarray, history: list[int], n_keep: int,
                min_tokens: int, stop_ids: np.ndarray | None) -> Iterator[list[SampledToken]]:
    """One token per target pass. The consumer appends each token to `history` before asking for the next,
    and a token is only evaluated when another is wanted (the last one never costs a forward pass)."""
    n = 0
    while True:
        yield [sampler.step(mask_stop_tokens(logits, n, min_tokens, stop_ids), history)]
        n += 1
        try:
            logits = session.eval_next([history[-1]], n_keep=n_keep)[-1]
        except ContextLengthError:
            return

