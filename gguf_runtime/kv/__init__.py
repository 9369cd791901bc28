"""The paged KV cache: the pool (pool.py), one sequence's block table (sequence.py), the batch description a
forward pass runs (batch.py), and the admission sums (manager.py). Nothing outside this package does
(block, slot) arithmetic."""

from .batch import ForwardBatch
from .manager import KVManager, Reservation
from .pool import BLOCK_TOKENS, KV_TYPES, KVPool
from .sequence import KVCache

__all__ = ["BLOCK_TOKENS", "KV_TYPES", "ForwardBatch", "KVCache", "KVManager", "KVPool", "Reservation"]
