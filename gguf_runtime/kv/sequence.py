"""One sequence's view of the KV pool: its tokens and its block table, and the only (block, slot) arithmetic.

Position i of a sequence holds the K/V of tokens[i], in block blocks[i // block_tokens] at slot
i % block_tokens. Sequences share blocks by reference:

- `fork()` gives a second sequence the same blocks (n > 1 samples of one prompt compute the prompt once);
  whichever writes into a shared block first copies it (copy-on-write at the divergence);
- every full block is registered in the pool under a hash of all tokens up to its end; `reuse_prefix`
  appends registered blocks another sequence computed. A released sequence also registers the prefixes of
  its last blocks, so reuse can stop at any token, not only at a block boundary.

The context shift works on the same structure: keep the first n_keep positions, drop the n_discard after
them, move the rest down and re-rotate their keys by -n_discard (RoPE rotations compose), which is what
llama.cpp's context shift does. Freed tail blocks return to the pool.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..attention import gather_rows, store_rows
from ..errors import ContextLengthError, PoolFullError
from .pool import KVPool, chain_hash


class KVCache:
    """One sequence in a pool: its tokens (position i holds tokens[i]) and the blocks holding their K/V."""

    def __init__(self, pool: KVPool, n_ctx: int):
        self.pool = pool
        self.n_ctx = n_ctx
        self.tokens: list[int] = []
        self.blocks: list[int] = []  # block table
        self._hashes: list[bytes] = []  # chain hash of each leading full block that is registered
        # blocks from this index on hold K/V computed in another context (a shift): never shared
        self._shifted_from: int | None = None

    @property
    def n(self) -> int:
        """Positions in use; the next token goes to position n."""
        return len(self.tokens)

    @property
    def free(self) -> int:
        return self.n_ctx - self.n

    def table(self) -> np.ndarray:
        return np.asarray(self.blocks, dtype=np.int32)

    def blocks_for(self, n_tokens: int) -> int:
        return -(-n_tokens // self.pool.block_tokens)

    def blocks_needed(self, n_new: int) -> int:
        """New blocks `prepare(n_new)` would take from the pool (a shared tail block is copied)."""
        bt = self.pool.block_tokens
        need = self.blocks_for(self.n + n_new) - len(self.blocks)
        tail = self.n // bt
        if n_new and tail < len(self.blocks) and self.pool.refs[self.blocks[tail]] > 1:
            need += 1
        return need

    def prepare(self, n_new: int) -> None:
        """Make positions n..n+n_new-1 writable: allocate blocks, copy or unregister a partial tail block."""
        if n_new <= 0:
            return
        if self.n + n_new > self.n_ctx:
            raise ContextLengthError(f"{n_new} tokens at position {self.n} do not fit a context of {self.n_ctx}")
        if self.blocks_needed(n_new) > self.pool.n_free:
            raise PoolFullError(f"{n_new} more tokens need {self.blocks_needed(n_new)} KV blocks, "
                                f"{self.pool.n_free} are free")
        self._own_from(self.n // self.pool.block_tokens, self.blocks_for(self.n + n_new))
        while len(self.blocks) < self.blocks_for(self.n + n_new):
            self.blocks.append(self.pool.allocate())

    def _own_from(self, first: int, end: int) -> None:
        """Blocks first..end-1 (those that exist) become private and unregistered."""
        del self._hashes[first:]
        for i in range(first, min(end, len(self.blocks))):
            block = self.blocks[i]
            if self.pool.refs[block] > 1:
                self.blocks[i] = self.pool.copy(block)
                self.pool.release(block)
            else:
                self.pool.forget(block)

    def addresses(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(block, slot) of each position (prepared): where its K/V row lives in the pool."""
        bt = self.pool.block_tokens
        return self.table()[positions // bt], positions % bt

    def store(self, layer: int, start: int, k: np.ndarray, v: np.ndarray) -> None:
        """k, v: (T, H_kv, hd) float32 for positions start..start+T-1 (prepared)."""
        blk, slot = self.addresses(np.arange(start, start + k.shape[0]))
        store_rows(self.pool.code, self.pool.k[layer], self.pool.v[layer], blk, slot,
                   np.ascontiguousarray(k, np.float32), np.ascontiguousarray(v, np.float32))

    def rows(self, layer: int, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The first n cached positions of a layer, dequantized: k, v each float32 (H_kv, n, hd)."""
        n = self.n if n is None else n
        shape = (self.pool.k.shape[2], n, self.pool.head_dim)
        k, v = np.empty(shape, np.float32), np.empty(shape, np.float32)
        table = self.table()
        gather_rows(self.pool.code, self.pool.k[layer], table, n, k)
        gather_rows(self.pool.code, self.pool.v[layer], table, n, v)
        return k, v

    def commit(self, tokens) -> None:
        """Record tokens whose K/V were just stored and register the blocks they complete."""
        self.tokens.extend(int(t) for t in tokens)
        bt = self.pool.block_tokens
        clean = self.n // bt if self._shifted_from is None else min(self.n // bt, self._shifted_from)
        for i in range(len(self._hashes), clean):
            parent = self._hashes[-1] if self._hashes else b""
            key = chain_hash(parent, self.tokens[i * bt:(i + 1) * bt])
            self.pool.register(self.blocks[i], key)
            self._hashes.append(key)

    def reuse_prefix(self, tokens, limit: int) -> int:
        """Append cached blocks of the pool that hold tokens[n:limit] (whole blocks only); returns how many
        tokens were taken. Works only from a block boundary, which is where registered blocks start."""
        bt = self.pool.block_tokens
        if self.n % bt or len(self._hashes) != self.n // bt:
            return 0
        start = self.n
        limit = min(limit, self.n_ctx)
        while self.n + bt <= limit:
            chunk = [int(t) for t in tokens[self.n:self.n + bt]]
            key = chain_hash(self._hashes[-1] if self._hashes else b"", chunk)
            block = self.pool.lookup(key)
            if block is None:
                break
            self.pool.retain(block)
            self.blocks.append(block)
            self._hashes.append(key)
            self.tokens.extend(chunk)
        # then the longest prefix of a block a finished sequence left behind (see release)
        parent = self._hashes[-1] if self._hashes else b""
        for m in range(min(bt - 1, limit - self.n), 0, -1):
            chunk = [int(t) for t in tokens[self.n:self.n + m]]
            block = self.pool.lookup(chain_hash(parent, chunk))
            if block is not None:
                self.pool.retain(block)
                self.blocks.append(block)
                self.tokens.extend(chunk)
                break
        return self.n - start

    def truncate(self, n: int) -> None:
        """Forget positions n.. (speculative rollback, prompt reuse); whole blocks past n go back to the pool."""
        if not 0 <= n <= self.n:
            raise ValueError(f"cannot truncate a cache of {self.n} positions to {n}")
        del self.tokens[n:]
        del self._hashes[n // self.pool.block_tokens:]
        keep = self.blocks_for(n)
        for block in self.blocks[keep:]:
            self.pool.release(block)
        del self.blocks[keep:]

    def release(self) -> None:
        """Give every block back. They stay cached in the pool for prefix reuse until evicted, the partial
        last block too (registered under its tokens so far), so a later prompt that extends this sequence —
        the next chat turn, a repeated prompt — resumes at the exact token, not a block boundary."""
        bt = self.pool.block_tokens
        full = self.n // bt
        if len(self._hashes) == full:  # (not after a shift: that content is not a prefix's)
            # every prefix of the last full block and of the partial one after it: where a follow-up
            # prompt (the next chat turn re-rendering this reply) diverges
            for i in range(max(0, full - 1), -(-self.n // bt)):
                parent = self._hashes[i - 1] if i else b""
                held = self.tokens[i * bt:min(self.n, (i + 1) * bt)]
                for m in range(1, min(len(held), bt - 1) + 1):
                    self.pool.register(self.blocks[i], chain_hash(parent, held[:m]))
        self.truncate(0)

    def fork(self) -> "KVCache":
        """A second sequence sharing all of this one's blocks; either copies a block before writing to it."""
        other = KVCache(self.pool, self.n_ctx)
        for block in self.blocks:
            self.pool.retain(block)
        other.blocks = list(self.blocks)
        other.tokens = list(self.tokens)
        other._hashes = list(self._hashes)
        other._shifted_from = self._shifted_from
        return other

    def common_prefix(self, tokens) -> int:
        """How many leading tokens are already cached (a chat turn then evaluates only the rest)."""
        n = min(self.n, len(tokens))
        cached = np.asarray(self.tokens[:n])
        diff = np.flatnonzero(cached != np.asarray(tokens[:n]))
        return int(diff[0]) if diff.size else n

    def make_room(self, n_new: int, n_keep: int, rotate_keys: Callable[[np.ndarray, int], None]) -> None:
        """llama.cpp's context shift, when n_new more tokens would not fit: keep n_keep, discard half of the
        rest (at least enough for n_new). Raises ContextLengthError when even that cannot make room."""
        if self.n + n_new <= self.n_ctx:
            return
        n_keep = min(max(n_keep, 0), self.n - 1)
        n_discard = max((self.n - n_keep) // 2, n_new - self.free)
        if n_keep + n_discard > self.n or n_new > self.n_ctx - n_keep:
            raise ContextLengthError(f"{n_new} tokens do not fit a context of {self.n_ctx} keeping {n_keep}")
        self.shift(n_keep, n_discard, rotate_keys)

    def shift(self, n_keep: int, n_discard: int, rotate_keys: Callable[[np.ndarray, int], None]) -> None:
        """Drop positions n_keep..n_keep+n_discard-1 and slide the rest down by n_discard.

        rotate_keys(keys, delta) re-rotates keys of shape (T, H_kv, hd) in place by delta positions.
        """
        if n_discard <= 0 or n_keep + n_discard > self.n:
            raise ValueError(f"bad context shift: keep {n_keep}, discard {n_discard} of {self.n}")
        src, end = n_keep + n_discard, self.n
        moved = [self.rows(layer) for layer in range(self.pool.k.shape[0])]
        kept_tokens = self.tokens[src:end]
        self.truncate(n_keep)
        first = n_keep // self.pool.block_tokens
        self._shifted_from = first if self._shifted_from is None else min(first, self._shifted_from)
        self.prepare(end - src)
        for layer, (k, v) in enumerate(moved):
            keys = k[:, src:end].transpose(1, 0, 2).copy()  # (T, H_kv, hd)
            rotate_keys(keys, -n_discard)
            self.store(layer, n_keep, keys, v[:, src:end].transpose(1, 0, 2))
        self.commit(kept_tokens)
