"""One sequence being evaluated: a model, its KV cache, prefix reuse, chunked prefill and context shift."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kv_cache import KVCache
from .model import Model


class ContextLengthError(ValueError):
    """The tokens cannot fit the context window."""


@dataclass
class EvalStats:
    tokens: int = 0  # tokens run through the model
    reused: int = 0  # tokens found already cached
    seconds: float = 0.0


class Session:
    """Feeds tokens to a model, keeping the cache in step with the token sequence it represents."""

    def __init__(self, model: Model, n_ctx: int, n_batch: int = 256):
        if n_ctx < 8:
            raise ValueError(f"n_ctx must be at least 8, got {n_ctx}")
        self.model = model
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self.cache: KVCache = model.new_cache(n_ctx)
        self.tokens_evaluated = 0  # lifetime count of tokens run through the model

    @property
    def tokens(self) -> list[int]:
        return self.cache.tokens

    def reset(self) -> None:
        self.cache.truncate(0)

    def eval_prompt(self, tokens: list[int], all_logits: bool = False) -> np.ndarray:
        """Make the cache hold exactly `tokens`, reusing the longest cached prefix; logits of what ran.

        At least the last token is always re-run so its logits exist. Returns (1, V) or, with all_logits,
        (n_new, V) for the newly evaluated positions.
        """
        if not tokens:
            raise ValueError("cannot evaluate an empty token sequence")
        if len(tokens) > self.n_ctx:
            raise ContextLengthError(f"prompt has {len(tokens)} tokens but the context holds {self.n_ctx}")
        keep = min(self.cache.common_prefix(tokens), len(tokens) - 1)
        self.cache.truncate(keep)
        return self._run(np.asarray(tokens[keep:], dtype=np.int64), all_logits)

    def eval_next(self, tokens: list[int], n_keep: int = 0, all_logits: bool = False) -> np.ndarray:
        """Append tokens (a sampled token, a draft to verify), shifting the context if it is full."""
        if self.cache.n + len(tokens) > self.n_ctx:
            self.shift(n_keep, need=len(tokens))
        return self._run(np.asarray(tokens, dtype=np.int64), all_logits)

    def shift(self, n_keep: int, need: int = 1) -> None:
        """llama.cpp's context shift: keep n_keep, discard half of the rest (at least `need` slots)."""
        n_keep = min(max(n_keep, 0), self.cache.n - 1)
        n_discard = max((self.cache.n - n_keep) // 2, need - self.cache.free)
        if n_keep + n_discard > self.cache.n or need > self.n_ctx - n_keep:
            raise ContextLengthError(f"{need} tokens do not fit a context of {self.n_ctx} keeping {n_keep}")
        self.cache.shift(n_keep, n_discard, self.model.shift_keys)

    def _run(self, tokens: np.ndarray, all_logits: bool) -> np.ndarray:
        outs = []
        for s in range(0, len(tokens), self.n_batch):
            chunk = tokens[s:s + self.n_batch]
            last = s + self.n_batch >= len(tokens)
            want = "all" if all_logits else ("last" if last else None)
            logits = self.model.forward(chunk, self.cache, logits=want)
            self.tokens_evaluated += len(chunk)
            if logits is not None:
                outs.append(np.array(logits, copy=True))  # kernels may reuse their output buffers
        return outs[0] if len(outs) == 1 else np.concatenate(outs)
