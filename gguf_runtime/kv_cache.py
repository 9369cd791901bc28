"""The paged KV cache: one pool of fixed-size blocks per model, a block table per sequence.

KVPool holds K and V for every layer in blocks of `block_tokens` positions (vLLM's PagedAttention layout,
see attention.py for how rows are stored and read). KVCache is one sequence's view of it: the tokens it
holds and the blocks they live in. Blocks are reference counted, so sequences can share a prefix:

- `fork()` gives a second sequence the same blocks (n > 1 samples of one prompt compute the prompt once);
  whichever writes into a shared block first copies it (copy-on-write at the divergence);
- every full block is registered under a hash of all tokens up to its end, and a finished sequence's blocks
  stay in the pool, least recently freed first to be reused, so a later prompt with the same prefix (a
  system prompt, a chat history) picks them up with `reuse_prefix` instead of recomputing them.

A block whose content is registered never changes; writing into one (a truncated or shifted sequence
continuing in the middle of it) unregisters or copies it first. A released sequence also registers the
prefixes of its last blocks, so reuse can stop at any token, not only at a block boundary.

The single-sequence context shift works on the same structure: keep the first n_keep positions, drop the
n_discard after them, move the rest down and re-rotate their keys by −n_discard (RoPE rotations compose),
which is what llama.cpp's context shift does. Freed tail blocks return to the pool.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import OrderedDict
from typing import Callable

import numpy as np

from .attention import gather_rows, store_rows
from .config import ConfigError
from .quants.registry import F16, F32, IQ4_NL, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, get_qtype

# KV cache types, as llama.cpp's --cache-type-k/-v names them
KV_TYPES = {"f32": F32, "f16": F16, "q8_0": Q8_0, "q4_0": Q4_0, "q4_1": Q4_1, "q5_0": Q5_0, "q5_1": Q5_1,
            "iq4_nl": IQ4_NL}
BLOCK_TOKENS = 32


class KVCacheSizeError(ConfigError):
    """The KV pool asked for would not fit in the memory this machine has available."""


class ContextFullError(Exception):
    """No room for the tokens and shifting was not allowed."""


class PoolFullError(Exception):
    """The pool has no free block left."""


class KVPool:
    """K/V storage for all sequences of one model: uint8 (n_layers, n_blocks, H_kv, block_tokens, row_bytes).

    np.zeros commits pages only when blocks are first written, so an idle pool costs address space only.
    """

    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, n_blocks: int,
                 block_tokens: int = BLOCK_TOKENS, kv_type: str = "f32"):
        if kv_type not in KV_TYPES:
            raise ValueError(f"unknown KV cache type {kv_type!r}; choose one of {', '.join(KV_TYPES)}")
        if n_blocks < 1 or block_tokens < 1:
            raise ValueError(f"a KV pool needs at least one block of at least one token")
        self.kv_type = kv_type
        self.qtype = get_qtype(KV_TYPES[kv_type])
        self.code = self.qtype.ggml_type
        if head_dim % self.qtype.block_size:
            raise ValueError(f"KV cache type {kv_type} needs head_dim divisible by {self.qtype.block_size}, "
                             f"this model has {head_dim}")
        self.head_dim = head_dim
        self.block_tokens = block_tokens
        self.n_blocks = n_blocks
        row_bytes = self.qtype.row_bytes(head_dim)
        shape = (n_layers, n_blocks, n_kv_heads, block_tokens, row_bytes)
        _check_fits_in_memory(2 * math.prod(shape), n_blocks * block_tokens, kv_type)
        self.k = np.zeros(shape, np.uint8)
        self.v = np.zeros(shape, np.uint8)
        self.refs = np.zeros(n_blocks, np.int32)
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(n_blocks))  # oldest first
        self._by_hash: dict[bytes, int] = {}
        self._hash_of: dict[int, list[bytes]] = {}
        self.prefix_caching = True  # off: registered blocks are never handed to another sequence

    @property
    def n_free(self) -> int:
        return len(self._free)

    @property
    def n_used(self) -> int:
        return self.n_blocks - len(self._free)

    @property
    def bytes_per_token(self) -> int:
        """K and V bytes one cached position takes over all layers."""
        n_layers, _, n_kv, _, row_bytes = self.k.shape
        return 2 * n_layers * n_kv * row_bytes

    def allocate(self) -> int:
        """A block for one owner, evicting the least recently freed cached block."""
        if not self._free:
            raise PoolFullError(f"the KV pool's {self.n_blocks} blocks are all in use")
        block, _ = self._free.popitem(last=False)
        self.forget(block)
        self.refs[block] = 1
        return block

    def retain(self, block: int) -> None:
        if self.refs[block] == 0:
            del self._free[block]
        self.refs[block] += 1

    def release(self, block: int) -> None:
        self.refs[block] -= 1
        if self.refs[block] == 0:
            self._free[block] = None  # keeps its hash: a later prompt may still reuse it
        elif self.refs[block] < 0:
            raise AssertionError(f"KV block {block} released more often than retained")

    def copy(self, block: int) -> int:
        """A private copy of a shared block (copy-on-write)."""
        new = self.allocate()
        self.k[:, new] = self.k[:, block]
        self.v[:, new] = self.v[:, block]
        return new

    def register(self, block: int, key: bytes) -> None:
        """The block holds the K/V of the tokens `key` hashes (a block may answer to several prefixes of
        its content; all are dropped together when it changes)."""
        if key not in self._by_hash:
            self._by_hash[key] = block
            self._hash_of.setdefault(block, []).append(key)

    def lookup(self, key: bytes) -> int | None:
        return self._by_hash.get(key) if self.prefix_caching else None

    def forget(self, block: int) -> None:
        """The block's content is about to change: it no longer stands for its tokens."""
        for key in self._hash_of.pop(block, ()):
            del self._by_hash[key]


def available_memory() -> int:
    """Bytes of memory this process can still use: MemAvailable on Linux, physical memory elsewhere."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _check_fits_in_memory(n_bytes: int, n_tokens: int, kv_type: str) -> None:
    """Refuse a pool bigger than the available memory before allocating it: np.zeros would reserve it lazily
    and the process would be killed later, mid-generation, once the blocks fill."""
    free = available_memory()
    if n_bytes > free:
        raise KVCacheSizeError(f"the KV cache for {n_tokens} tokens ({kv_type}) needs {n_bytes / 2**30:.1f} GiB, "
                               f"more than the {free / 2**30:.1f} GiB of memory available (lower n_ctx, or use a "
                               f"smaller cache type such as q8_0)")


def _chain_hash(parent: bytes, tokens: list[int]) -> bytes:
    return hashlib.blake2b(np.asarray(tokens, np.int64).tobytes(), digest_size=16, key=parent).digest()


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
            raise ContextFullError(f"{n_new} tokens at position {self.n} do not fit a context of {self.n_ctx}")
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

    def store(self, layer: int, start: int, k: np.ndarray, v: np.ndarray) -> None:
        """k, v: (T, H_kv, hd) float32 for positions start..start+T-1 (prepared)."""
        pos = np.arange(start, start + k.shape[0])
        table = self.table()
        bt = self.pool.block_tokens
        store_rows(self.pool.code, self.pool.k[layer], self.pool.v[layer], table[pos // bt], pos % bt,
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
            key = _chain_hash(parent, self.tokens[i * bt:(i + 1) * bt])
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
            key = _chain_hash(self._hashes[-1] if self._hashes else b"", chunk)
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
            block = self.pool.lookup(_chain_hash(parent, chunk))
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
                    self.pool.register(self.blocks[i], _chain_hash(parent, held[:m]))
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
