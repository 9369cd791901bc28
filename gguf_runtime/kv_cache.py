"""Key/value cache of one sequence: n_ctx preallocated slots per layer, slot i holds position i.

Storage is float32: numba has no float16 on the CPU, and converting on every attention read would cost more
than the memory saves at the context sizes laptops use (SmolLM2 at n_ctx 2048: 94 MB). The arrays come from
np.zeros, so pages are only committed as positions are written.

When the context is full, `shift` does what llama.cpp's context shift does: keep the first n_keep positions
(attention sinks), drop the n_discard after them, slide the rest down and re-rotate their keys by −n_discard
(RoPE rotations compose, so this equals having computed them at the new positions). Keys are stored rotated
so attention never re-applies RoPE; the shift is the only place they are touched again.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


class ContextFullError(Exception):
    """No room for the tokens and shifting was not allowed."""


class KVCache:
    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, n_ctx: int):
        self.n_ctx = n_ctx
        self.k = np.zeros((n_layers, n_kv_heads, n_ctx, head_dim), dtype=np.float32)  # rotated keys
        self.v = np.zeros((n_layers, n_kv_heads, n_ctx, head_dim), dtype=np.float32)
        self.tokens: list[int] = []  # token id at each cached position

    @property
    def n(self) -> int:
        """Positions in use; the next token goes to position n."""
        return len(self.tokens)

    @property
    def free(self) -> int:
        return self.n_ctx - self.n

    def store(self, layer: int, start: int, k: np.ndarray, v: np.ndarray) -> None:
        """k, v: (T, H_kv, hd) for positions start..start+T-1."""
        end = start + k.shape[0]
        self.k[layer, :, start:end] = k.transpose(1, 0, 2)
        self.v[layer, :, start:end] = v.transpose(1, 0, 2)

    def truncate(self, n: int) -> None:
        """Forget positions n.. (speculative rollback, prompt reuse). Stale slots are overwritten later."""
        if not 0 <= n <= self.n:
            raise ValueError(f"cannot truncate a cache of {self.n} positions to {n}")
        del self.tokens[n:]

    def common_prefix(self, tokens: list[int] | np.ndarray) -> int:
        """How many leading tokens are already cached (a chat turn then evaluates only the rest)."""
        n = min(self.n, len(tokens))
        cached = np.asarray(self.tokens[:n])
        diff = np.flatnonzero(cached != np.asarray(tokens[:n]))
        return int(diff[0]) if diff.size else n

    def shift(self, n_keep: int, n_discard: int, rotate_keys: Callable[[np.ndarray, int], None]) -> None:
        """Drop positions n_keep..n_keep+n_discard-1 and slide the rest down by n_discard.

        rotate_keys(keys, delta) re-rotates keys of shape (T, H_kv, hd) in place by delta positions.
        """
        if n_discard <= 0 or n_keep + n_discard > self.n:
            raise ValueError(f"bad context shift: keep {n_keep}, discard {n_discard} of {self.n}")
        src, end = n_keep + n_discard, self.n
        moved = end - src
        for layer in range(self.k.shape[0]):
            keys = self.k[layer, :, src:end].transpose(1, 0, 2).copy()  # (T, H_kv, hd)
            rotate_keys(keys, -n_discard)
            self.k[layer, :, n_keep:n_keep + moved] = keys.transpose(1, 0, 2)
            self.v[layer, :, n_keep:n_keep + moved] = self.v[layer, :, src:end]
        del self.tokens[n_keep:src]
