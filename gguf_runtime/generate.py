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


def generate(session: Session, tokenizer: Tokenizer, prompt: list[int], params: SamplingParams,
             sampler: Sampler | None = None, n_keep: int = 0, drafter=None) -> Generator[str, None, Generation]:
    """Yield text deltas as they become final; return the Generation (`result = yield from generate(...)`).

    The cache is reused for the longest common prefix with what it holds. When the context fills during
    generation it shifts (keeping n_keep tokens) if max_tokens asks for more than fits, as llama.cpp does;
    with max_tokens=None generation stops at the end of the context instead. A drafter (see speculative.py)
    proposes several tokens per target pass; the output is what plain sampling would give.
    """
    sampler = sampler or Sampler(params)
    result = Generation(logprobs=[] if params.logprobs is not None else None)
    stats = result.stats
    stats.prompt_tokens = len(prompt)
    stop_ids = set(params.stop_token_ids or ())
    if not params.ignore_eos:
        stop_ids |= set(tokenizer.eog_ids)
    stop_ids_arr = np.fromiter(stop_ids, dtype=np.int64) if stop_ids else None
    matcher = StopMatcher(params.stop or [])
    decoder = StreamDecoder(tokenizer, skip_special=params.skip_special_tokens)
    limit = params.max_tokens if params.max_tokens is not None else session.n_ctx - len(prompt)
    history = list(prompt)

    t0 = time.perf_counter()
    stats.reused_tokens = min(session.cache.common_prefix(prompt), len(prompt) - 1)
    logits = session.eval_prompt(prompt)[-1]
    t1 = time.perf_counter()
    stats.prefill_seconds = t1 - t0
    stats.speculative = drafter.stats if drafter is not None else None
    steps = (drafter.steps(session, sampler, logits, history, n_keep, params.min_tokens, stop_ids_arr)
             if drafter is not None else
             plain_steps(session, sampler, logits, history, n_keep, params.min_tokens, stop_ids_arr))

    text, emitted = "", 0
    for sampled in chain.from_iterable(steps):
        token = sampled.token_id
        if token in stop_ids:
            result.finish_reason, result.stop_reason = "stop", token
            break
        stats.generated_tokens += 1
        result.token_ids.append(token)
        history.append(token)
        if result.logprobs is not None:
            result.logprobs.append(sampled)
        text += decoder.push(token)
        hit = matcher.find(text, emitted) if matcher.stops else None
        if hit is not None:
            cut, stop = hit
            if params.include_stop_str_in_output:
                cut += len(stop)
            text = text[:cut]
            if cut > emitted:
                yield text[emitted:cut]
            emitted = cut
            result.finish_reason, result.stop_reason = "stop", stop
            break
        end = matcher.safe_end(text)
        if end > emitted:
            yield text[emitted:end]
            emitted = end
        if stats.generated_tokens >= limit or (session.cache.free == 0 and params.max_tokens is None):
            result.finish_reason = "length"
            break
    else:  # the steps ran out: the context could not make room
        result.finish_reason = "length"
    steps.close()

    if not isinstance(result.stop_reason, str):  # nothing was cut at a stop string: release held-back text
        text += decoder.flush()
        if len(text) > emitted:
            yield text[emitted:]
    result.text = text
    stats.decode_seconds = time.perf_counter() - t1
    return result


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

