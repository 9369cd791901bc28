"""The paged KV pool: K and V for every layer of one model in fixed-size blocks, shared by all sequences.

KVPool holds one `BlockPool` per layer group: the layers attending over the whole context, and, where the
pool allows it, the sliding-window layers in a second, smaller one (llama.cpp's iSWA cache, vLLM's
sliding-window KV cache group). A sequence keeps a block table per group (sequence.py); a sliding group's
table lets go of the blocks that fell out of every future window, so its pool is sized for the window (plus
a batch) of each sequence the engine runs, not for the context: 15 of Gemma 3's 18 layers then cost
~W + n_batch positions per sequence instead of n_ctx.

A BlockPool holds the blocks (vLLM's PagedAttention layout, see attention.py for how rows are stored and
read), their reference counts, the free list and the prefix-hash index. Blocks are reference counted so
sequences can share a prefix (see sequence.py); a block whose refcount drops to zero goes to the end of the
free list but keeps its hashes, so a later prompt with the same prefix (a system prompt, a chat history)
picks it up instead of recomputing it, until it is evicted, least recently freed first. A block whose
content is registered never changes: writing into one unregisters or copies it first.
"""

from __future__ import annotations

import hashlib
import math
import mmap
import os
from collections import OrderedDict

import numpy as np

from ..errors import KVCacheSizeError, PoolFullError
from ..quants.registry import F16, F32, IQ4_NL, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, get_qtype

# KV cache types, as llama.cpp's --cache-type-k/-v names them
KV_TYPES = {"f32": F32, "f16": F16, "q8_0": Q8_0, "q4_0": Q4_0, "q4_1": Q4_1, "q5_0": Q5_0, "q5_1": Q5_1,
            "iq4_nl": IQ4_NL}
BLOCK_TOKENS = 32


class BlockPool:
    """The blocks of one layer group: uint8 k, v (n_layers of the group, n_blocks, H_kv, block_tokens,
    row_bytes), with reference counts, free list and prefix-hash index.

    The storage is committed 4 KiB at a time as blocks are first written (`zeros_committed_on_write`), so an
    idle pool costs address space only.
    """

    def __init__(self, layers: list[int], window: int, shape: tuple[int, ...]):
        self.layers = layers  # the model layers it stores, in order
        self.window = window  # positions its layers attend over; 0: the whole context (never lets go)
        self.n_blocks = shape[1]
        self.k = zeros_committed_on_write(shape)
        self.v = zeros_committed_on_write(shape)
        self.refs = np.zeros(self.n_blocks, np.int32)
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(self.n_blocks))  # oldest first
        self._by_hash: dict[bytes, int] = {}
        self._hash_of: dict[int, list[bytes]] = {}
        self.prefix_caching = True  # off: registered blocks are never handed to another sequence

    @property
    def n_free(self) -> int:
        return len(self._free)

    @property
    def n_used(self) -> int:
        return self.n_blocks - len(self._free)

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

    def release(self, block: int, reuse_first: bool = False) -> None:
        """One owner less; at none the block is free. It keeps its hash (a later prompt may still reuse it)
        and is evicted last-freed-last, unless reuse_first: a sliding window's block left behind mid-sequence
        is taken again first, so one sequence cycles through few blocks (the pages its pool commits)."""
        self.refs[block] -= 1
        if self.refs[block] == 0:
            self._free[block] = None
            if reuse_first:
                self._free.move_to_end(block, last=False)
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


class KVPool:
    """K/V storage for all sequences of one model: a BlockPool for the layers that attend over the whole
    context, and one for the sliding layers when `sliding_blocks` gives them their own (smaller) pool.

    windows: each layer's attention window (0: all positions). max_rows: the most rows one sequence runs in
    a pass; with it, the sliding layers' pool holds sliding_blocks blocks (see sliding_blocks_per_sequence).
    """

    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, n_blocks: int,
                 block_tokens: int = BLOCK_TOKENS, kv_type: str = "f32", windows: list[int] | None = None,
                 sliding_blocks: int | None = None, max_rows: int | None = None):
        if kv_type not in KV_TYPES:
            raise ValueError(f"unknown KV cache type {kv_type!r}; choose one of {', '.join(KV_TYPES)}")
        if n_blocks < 1 or block_tokens < 1 or (sliding_blocks is not None and sliding_blocks < 1):
            raise ValueError(f"a KV pool needs at least one block of at least one token")
        if (sliding_blocks is None) != (max_rows is None):
            raise ValueError("a pool of its own for the sliding layers needs both sliding_blocks and max_rows")
        self.kv_type = kv_type
        self.qtype = get_qtype(KV_TYPES[kv_type])
        self.code = self.qtype.ggml_type
        if head_dim % self.qtype.block_size:
            raise ValueError(f"KV cache type {kv_type} needs head_dim divisible by {self.qtype.block_size}, "
                             f"this model has {head_dim}")
        self.head_dim = head_dim
        self.n_kv_heads = n_kv_heads
        self.block_tokens = block_tokens
        self.n_layers = n_layers
        self.windows = [0] * n_layers if windows is None else list(windows)
        self.max_rows = max_rows  # (only where sliding layers have a pool of their own)
        row_bytes = self.qtype.row_bytes(head_dim)
        windows = self.windows
        sliding = [i for i in range(n_layers) if windows[i] > 0] if sliding_blocks is not None else []
        if len({windows[i] for i in sliding}) > 1:
            raise ValueError("sliding layers of one pool share one window")
        layout = [([i for i in range(n_layers) if i not in sliding], 0, n_blocks)]
        if sliding:
            layout.append((sliding, windows[sliding[0]], sliding_blocks))
        layout = [g for g in layout if g[0]]
        shapes = [(len(layers), blocks, n_kv_heads, block_tokens, row_bytes) for layers, _, blocks in layout]
        _check_fits_in_memory(2 * sum(math.prod(s) for s in shapes), n_blocks * block_tokens, kv_type)
        self.groups = [BlockPool(layers, window, shape) for (layers, window, _), shape in zip(layout, shapes)]
        # model layer -> (group, its index in the group's storage)
        self.layer_group = [next((g, group.layers.index(i)) for g, group in enumerate(self.groups)
                                 if i in group.layers) for i in range(n_layers)]

    def layer(self, i: int) -> tuple[int, np.ndarray, np.ndarray]:
        """(group, K, V) of model layer i: the group whose block tables address it, and its blocks."""
        g, j = self.layer_group[i]
        return g, self.groups[g].k[j], self.groups[g].v[j]

    @property
    def n_blocks(self) -> int:
        return sum(g.n_blocks for g in self.groups)

    @property
    def n_free(self) -> int:
        return sum(g.n_free for g in self.groups)

    @property
    def n_used(self) -> int:
        return sum(g.n_used for g in self.groups)

    @property
    def nbytes(self) -> int:
        """Bytes of K/V storage the pool holds (committed as blocks are first written)."""
        return sum(g.k.nbytes + g.v.nbytes for g in self.groups)

    @property
    def bytes_per_token(self) -> int:
        """K and V bytes one cached position takes over all layers."""
        return 2 * self.n_layers * self.n_kv_heads * self.qtype.row_bytes(self.head_dim)

    @property
    def prefix_caching(self) -> bool:
        return self.groups[0].prefix_caching

    @prefix_caching.setter
    def prefix_caching(self, on: bool) -> None:
        for g in self.groups:
            g.prefix_caching = bool(on)


def zeros_committed_on_write(shape: tuple[int, ...]) -> np.ndarray:
    """A uint8 array of zeros whose memory the OS commits one 4 KiB page at a time, as it is first written.

    np.zeros is lazy too, but NumPy advises Linux to back every array of 4 MiB or more with 2 MiB transparent
    huge pages, and the pool is written sparsely: a layer's first block sits in its own 2 MiB, so the first
    token of a prompt made the kernel zero and commit 2 MiB per layer for K and again for V. Measured
    2026-12-07 (`gguf-runtime complete -n 1`, SmolLM2, n_ctx 2048, on a 2-core VM): peak RSS 381 MB
    against 263 MB this way, and the first forward 0.15-0.49 s (the system time of zeroing those pages,
    worst where the hypervisor must back fresh memory) against 0.10-0.15 s. An anonymous mapping gets no
    such advice, and where the kernel puts huge pages on every mapping (THP "always") it is advised off."""
    n = math.prod(shape)
    if n == 0:
        return np.zeros(shape, np.uint8)
    buf = mmap.mmap(-1, n)  # private, anonymous, zero-filled on first touch
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        buf.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(buf, np.uint8).reshape(shape)


def sliding_blocks_per_sequence(window: int, max_rows: int, block_tokens: int) -> int:
    """Blocks a sliding layer group holds for one sequence at most: those of the W - 1 positions before the
    first row of a pass and of its max_rows rows, one more where they straddle block boundaries (the blocks
    before are let go as the pass is prepared, see KVCache.prepare)."""
    return -(-(window - 1 + max_rows) // block_tokens) + 1


def chain_hash(parent: bytes, tokens: list[int]) -> bytes:
    """The key of a block: its tokens, chained to the key of the blocks before it."""
    return hashlib.blake2b(np.asarray(tokens, np.int64).tobytes(), digest_size=16, key=parent).digest()


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
    """Refuse a pool bigger than the available memory before allocating it: the pages are committed lazily
    and the process would be killed later, mid-generation, once the blocks fill."""
    free = available_memory()
    if n_bytes > free:
        raise KVCacheSizeError(f"the KV cache for {n_tokens} tokens ({kv_type}) needs {n_bytes / 2**30:.1f} GiB, "
                               f"more than the {free / 2**30:.1f} GiB of memory available (lower n_ctx, or use a "
                               f"smaller cache type such as q8_0)")
