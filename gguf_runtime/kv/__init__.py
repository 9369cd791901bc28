"""The paged KV cache: the pool (pool.py: a block pool per layer group), one sequence's block tables
(sequence.py), the batch description a forward pass runs (batch.py), and the admission sums (manager.py).
Nothing outside this package does (block, slot) arithmetic."""

from .batch import ForwardBatch
from .manager import KVManager, Reservation
from .pool import BLOCK_TOKENS, KV_TYPES, BlockPool, KVPool, sliding_blocks_per_sequence
from .sequence import KVCache

__all__ = ["BLOCK_TOKENS", "KV_TYPES", "BlockPool", "ForwardBatch", "KVCache", "KVManager", "KVPool", "Reservation",
           "sliding_blocks_per_sequence"]
