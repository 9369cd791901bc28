"""The batch description a forward pass runs: which token goes to which position, and where its K/V row lives.

The forward pass never sees block tables being built or blocks being allocated: `ForwardBatch.build`
prepares the sequences' blocks (allocation, copy-on-write) and computes every row's position, and its block
and slot in each layer group of the pool (all layers, or the full-context ones and the sliding ones); the model
reads them and stores K/V there; `commit()` then records the tokens in the sequences and
registers the blocks they completed for prefix reuse.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .pool import KVPool
from .sequence import KVCache


@dataclass
class Rows:
    """Where one layer group's K/V rows of a batch go, and the block tables its layers read."""
    blocks: np.ndarray  # (T,) int32 block of the group's pool the row's K/V goes to
    slots: np.ndarray  # (T,) int64 slot inside that block
    tables: np.ndarray  # (B, max blocks) int32 each sequence's block table (zero padded, and where let go)


@dataclass
class ForwardBatch:
    pool: KVPool  # K/V storage the rows are stored into and attend over
    tokens: np.ndarray  # (T,) int64 token of each row
    seq: np.ndarray  # (T,) int64 which sequence of the batch each row belongs to
    positions: np.ndarray  # (T,) int64 the row's position in its sequence
    groups: list[Rows]  # per layer group of the pool
    runs: list[int]  # tokens per sequence
    sequences: list[KVCache]
    n_ctx: int  # positions each sequence's context holds (LongRoPE picks its factors by it)

    @classmethod
    def build(cls, sequences: list[KVCache], token_lists: list) -> "ForwardBatch":
        """Each sequence's tokens at its next positions (blocks prepared; sequences share one pool)."""
        runs = [len(t) for t in token_lists]
        pool = sequences[0].pool
        if min(runs) == 0 or any(s.pool is not pool for s in sequences):
            raise ValueError("every sequence of a batch needs tokens, and all must share one KV pool")
        if pool.max_rows is not None and max(runs) > pool.max_rows:
            raise ValueError(f"{max(runs)} rows of one sequence in a pass: the pool's sliding layers are sized "
                             f"for {pool.max_rows}")
        for s, n in zip(sequences, runs):
            s.prepare(n)
        positions = np.concatenate([np.arange(s.n, s.n + n) for s, n in zip(sequences, runs)])
        groups = []
        for g in range(len(pool.groups)):
            tables = np.zeros((len(sequences), max(len(s.tables[g]) for s in sequences)), np.int32)
            for b, s in enumerate(sequences):
                tables[b, :len(s.tables[g])] = np.maximum(s.tables[g], 0)  # let-go blocks are never read
            where = [s.addresses(g, np.arange(s.n, s.n + n)) for s, n in zip(sequences, runs)]
            groups.append(Rows(np.concatenate([w[0] for w in where]), np.concatenate([w[1] for w in where]),
                               tables))
        return cls(pool=pool, tokens=np.concatenate([np.asarray(t, dtype=np.int64) for t in token_lists]),
                   seq=np.repeat(np.arange(len(sequences)), runs), positions=positions, groups=groups,
                   runs=runs, sequences=sequences, n_ctx=sequences[0].n_ctx)

    def layer(self, i: int) -> tuple[np.ndarray, np.ndarray, Rows]:
        """K, V blocks of model layer i and where this batch's rows go in them."""
        g, K, V = self.pool.layer(i)
        return K, V, self.groups[g]

    @property
    def last_rows(self) -> np.ndarray:
        """(B,) index of each sequence's last row."""
        return np.cumsum(self.runs) - 1

    def commit(self) -> None:
        """The K/V rows are stored: the sequences now hold these tokens."""
        start = 0
        for s, n in zip(self.sequences, self.runs):
            s.commit(self.tokens[start:start + n])
            start += n
