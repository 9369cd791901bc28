"""Admission sums: whether the KV pool can hold a request's worst case beside what admitted work may still take.

The engine admits a request only when the pool can hold everything it may ever need (its prompt, then each
of its n samples growing to prompt + max_tokens, or to the context) on top of what running sequences may
still take; so the pool never runs out mid-generation and nothing is ever preempted. A request that does not
fit now waits for others to finish; one that would not fit even an empty pool is refused when it is added.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .pool import KVPool
from .sequence import KVCache


@dataclass
class Reservation:
    """What one admitted request may still take: its prompt's sequence until it forks, then its samples'."""
    prompt_len: int
    n: int  # samples
    limit_blocks: int  # blocks one sample may hold at most
    sequences: list[KVCache] = field(default_factory=list)  # [the prompt's] while prefilling, then the samples
    forked: bool = False


class KVManager:
    """Owns the pool's accounting for the engine: new sequences, the worst case of a request, admission."""

    def __init__(self, pool: KVPool, n_ctx: int):
        self.pool = pool
        self.n_ctx = n_ctx
        self.reservations: list[Reservation] = []

    def new_sequence(self) -> KVCache:
        return KVCache(self.pool, self.n_ctx)

    def limit_blocks(self, prompt_len: int, max_new: int) -> int:
        """Blocks one sample may hold: prompt + max_new positions (at most the context), plus one for a
        copy-on-write of a shared tail block."""
        return -(-min(prompt_len + max_new, self.n_ctx) // self.pool.block_tokens) + 1

    def need(self, r: Reservation) -> int:
        """Blocks the reservation may still take from the pool."""
        bt = self.pool.block_tokens
        if r.forked:
            return sum(max(0, r.limit_blocks - len(s.blocks)) for s in r.sequences)
        held = len(r.sequences[0].blocks) if r.sequences else 0
        return max(0, -(-r.prompt_len // bt) - held) + r.n * (r.limit_blocks - r.prompt_len // bt)

    def fits_empty_pool(self, r: Reservation) -> bool:
        return self.need(r) <= self.pool.n_blocks

    def outstanding(self) -> int:
        return sum(self.need(r) for r in self.reservations)

    def try_admit(self, r: Reservation) -> bool:
        """Reserve r if the free blocks cover its need beside the others'."""
        if self.need(r) > self.pool.n_free - self.outstanding():
            return False
        self.reservations.append(r)
        return True

    def release(self, r: Reservation) -> None:
        """Its sequences are done: give their blocks back (they stay cached for prefix reuse)."""
        for s in r.sequences:
            s.release()
        r.sequences.clear()
        if r in self.reservations:
            self.reservations.remove(r)
