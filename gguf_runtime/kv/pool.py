"""The paged KV pool: K and V for every layer of one model in fixed-size blocks, shared by all sequences.

KVPool holds the blocks (vLLM's PagedAttention layout, see attention.py for how rows are stored and read),
their reference counts, the free list and the prefix-hash index. Blocks are reference counted so sequences
can share a prefix (see sequence.py); a block whose refcount drops to zero goes to the end of the free list
but keeps its hashes, so a later prompt with the same prefix (a system prompt, a chat history) picks it up
instead of recomputing it, until it is evicted, least recently freed first. A block whose content is
registered never changes: writing into one unregisters or copies it first.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np

from ..errors import PoolFullError
from ..quants.registry import F16, F32, IQ4_NL, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, get_qtype

# KV cache types, as llama.cpp's --cache-type-k/-v names them
KV_TYPES = {"f32": F32, "f16": F16, "q8_0": Q8_0, "q4_0": Q4_0, "q4_1": Q4_1, "q5_0": Q5_0, "q5_1": Q5_1,
            "iq4_nl": IQ4_NL}
BLOCK_TOKENS = 32


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


def chain_hash(parent: bytes, tokens: list[int]) -> bytes:
    """The key of a block: its tokens, chained to the key of the blocks before it."""
    return hashlib.blake2b(np.asarray(tokens, np.int64).tobytes(), digest_size=16, key=parent).digest()
