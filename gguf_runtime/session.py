"""One sequence being evaluated: a model, its KV cache, prefix reuse, chunked prefill and context shift."""

from __future__ import annotations

import numpy as np

from .kv_cache import KVCache, KVPool
from .model import Model


class ContextLengthError(ValueError):
    """The tokens cannot fit the context window."""


class Session:
    """Feeds tokens to a model, keeping the cache in step with the token sequence it represents.

    Sessions of one model may share a KV pool (batched generation, prompt caching across requests); by
    default a session has a pool of its own sized for n_ctx.
    """

    def __init__(self, model: Model, n_ctx: int, n_batch: int = 256, pool: KVPool | None = None,
                 kv_type: str = "f32", cache: KVCache | None = None):
        if n_ctx < 8:
            raise ValueError(f"n_ctx must be at least 8, got {n_ctx}")
        if n_batch < 1:
            raise ValueError(f"n_batch must be at least 1, got {n_batch}")
        self.model = model
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self.cache: KVCache = cache or KVCache(pool or model.new_pool(n_ctx, kv_type), n_ctx)
        self.tokens_evaluated = 0  # lifetime count of tokens run through the model
        self.reused = 0  # prompt tokens the last eval_prompt/start_prompt found cached
        self._pending = np.empty(0, np.int64)  # prompt tokens start_prompt left to evaluate
        self._all_logits = False
        self._outs: list[np.ndarray] = []

    @property
    def pool(self) -> KVPool:
        return self.cache.pool

    @property
    def tokens(self) -> list[int]:
        return self.cache.tokens

    def reset(self) -> None:
        """Start from an empty cache; what it held stays in the pool for prefix reuse."""
        self.cache.release()

    def fork(self) -> "Session":
        """A session continuing from the same cached tokens, sharing their blocks (copy-on-write)."""
        return Session(self.model, self.n_ctx, self.n_batch, cache=self.cache.fork())

    def eval_prompt(self, tokens: list[int], all_logits: bool = False, reuse_pool: bool = True) -> np.ndarray:
        """Make the cache hold exactly `tokens`, reusing the longest cached prefix; logits of what ran.

        At least the last token is always re-run so its logits exist. Returns (1, V) or, with all_logits,
        (n_new, V) for the newly evaluated positions.
        """
        self.start_prompt(tokens, all_logits, reuse_pool)
        while (logits := self.step_prompt()) is None:
            pass
        return logits

    def start_prompt(self, tokens: list[int], all_logits: bool = False, reuse_pool: bool = True) -> int:
        """Begin evaluating a prompt: keep the cached common prefix, then (reuse_pool) take whole cached
        blocks of the pool (a prefix another request computed); returns the tokens left for `step_prompt`."""
        if not tokens:
            raise ValueError("cannot evaluate an empty token sequence")
        if len(tokens) > self.n_ctx:
            raise ContextLengthError(f"prompt has {len(tokens)} tokens but the context holds {self.n_ctx}")
        keep = min(self.cache.common_prefix(tokens), len(tokens) - 1)
        self.cache.truncate(keep)
        if reuse_pool:
            keep += self.cache.reuse_prefix(tokens, limit=len(tokens) - 1)
        self.reused = keep
        self._pending = np.asarray(tokens[keep:], dtype=np.int64)
        self._all_logits = all_logits
        self._outs = []
        return len(self._pending)

    def step_prompt(self) -> np.ndarray | None:
        """Evaluate the next chunk (at most n_batch tokens) of the started prompt; its logits once done."""
        chunk, self._pending = self._pending[:self.n_batch], self._pending[self.n_batch:]
        last = len(self._pending) == 0
        logits = self._forward(chunk, "all" if self._all_logits else ("last" if last else None))
        if logits is not None:
            self._outs.append(logits)
        if not last:
            return None
        outs, self._outs = self._outs, []
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    @property
    def prompt_pending(self) -> int:
        return len(self._pending)

    def eval_next(self, tokens: list[int], n_keep: int = 0, all_logits: bool = False) -> np.ndarray:
        """Append tokens (a sampled token, a draft to verify), shifting the context if it is full."""
        self.make_room(len(tokens), n_keep)
        outs = []
        for s in range(0, len(tokens), self.n_batch):
            chunk = np.asarray(tokens[s:s + self.n_batch], dtype=np.int64)
            last = s + self.n_batch >= len(tokens)
            logits = self._forward(chunk, "all" if all_logits else ("last" if last else None))
            if logits is not None:
                outs.append(logits)
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def make_room(self, n_new: int, n_keep: int = 0) -> None:
        """Shift the context if n_new more tokens would not fit."""
        if self.cache.n + n_new > self.n_ctx:
            self.shift(n_keep, need=n_new)

    def shift(self, n_keep: int, need: int = 1) -> None:
        """llama.cpp's context shift: keep n_keep, discard half of the rest (at least `need` slots)."""
        n_keep = min(max(n_keep, 0), self.cache.n - 1)
        n_discard = max((self.cache.n - n_keep) // 2, need - self.cache.free)
        if n_keep + n_discard > self.cache.n or need > self.n_ctx - n_keep:
            raise ContextLengthError(f"{need} tokens do not fit a context of {self.n_ctx} keeping {n_keep}")
        self.cache.shift(n_keep, n_discard, self.model.shift_keys)

    def _forward(self, tokens: np.ndarray, want: str | None) -> np.ndarray | None:
        logits = self.model.forward(tokens, self.cache, logits=want)
        self.tokens_evaluated += len(tokens)
        return None if logits is None else np.array(logits, copy=True)  # kernels may reuse output buffers


def decode_step(sessions: list[Session], tokens: list[int], n_keep: list[int]) -> np.ndarray:
    """Append one token to each session in one batched forward pass (shifting any full context first);
    returns (B, V) logits, row b equal to what sessions[b].eval_next([tokens[b]]) would give."""
    for session, keep in zip(sessions, n_keep):
        session.make_room(1, keep)
    model = sessions[0].model
    logits = model.forward_batch([s.cache for s in sessions], [[t] for t in tokens], logits="last")
    for session in sessions:
        session.tokens_evaluated += 1
    return np.array(logits, copy=True)
