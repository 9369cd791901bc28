"""Admission sums: whether the KV pool can hold a request's worst case beside what admitted work may still take.

The engine admits a request only when the pool can hold everything it may ever need (its prompt, then each
of its n samples growing to prompt + max_tokens, or to the context) on top of what running sequences may
still take; so the pool never runs out mid-generation and nothing is ever preempted. A request that does not
fit now waits for others to finish; one that would not fit even an empty pool is refused when it is added.
The sums run per layer group of the pool: a sliding-window group's sample holds at most its window's blocks
(and those of the positions a context shift keeps), whatever the context.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .pool import KVPool, sliding_blocks_per_sequence
from .sequence import KVCache, pinned_blocks


@dataclass
class Reservation:
    """What one admitted request may still take: its prompt's sequence until it forks, then its samples'."""
    prompt_len: int
    n: int  # samples
    limit_blocks: int  # blocks one sample may hold at most in a full-context group
    keep: int = 0  # positions a context shift keeps that sliding groups hold on to (see KVCache.keep)
    sequences: list[KVCache] = field(default_factory=list)  # [the prompt's] while prefilling, then the samples
    forked: bool = False


class KVManager:
    """Owns the pool's accounting for the engine: new sequences, the worst case of a request, admission."""

    def __init__(self, pool: KVPool, n_ctx: int):
        self.pool = pool
        self.n_ctx = n_ctx
        self.reservations: list[Reservation] = []

    def new_sequence(self, keep: int = 0) -> KVCache:
        return KVCache(self.pool, self.n_ctx, keep)

    def limit_blocks(self, prompt_len: int, max_new: int) -> int:
        """Blocks one sample may hold: prompt + max_new positions (at most the context), plus one for a
        copy-on-write of a shared tail block."""
        return -(-min(prompt_len + max_new, self.n_ctx) // self.pool.block_tokens) + 1

    def need(self, r: Reservation) -> list[int]:
        """Blocks the reservation may still take from each group's pool."""
        bt = self.pool.block_tokens
        out = []
        for g, group in enumerate(self.pool.groups):
            if group.window:
                # each sample holds at most `limit` blocks, shared or not
                limit = min(r.limit_blocks, len(pinned_blocks(r.keep, group.window, bt)) +
                            sliding_blocks_per_sequence(group.window, self.pool.max_rows, bt))
                held = {b for s in r.sequences for b in s.held(g)}
                out.append(max(0, r.n * limit - len(held)))
            elif r.forked:
                out.append(sum(max(0, r.limit_blocks - len(s.tables[g])) for s in r.sequences))
            else:
                held = len(r.sequences[0].tables[g]) if r.sequences else 0
                out.append(max(0, -(-r.prompt_len // bt) - held) + r.n * (r.limit_blocks - r.prompt_len // bt))
        return out

    def shortfall(self, r: Reservation) -> str | None:
        """Why r can never fit, even in an empty pool; None when it can."""
        for need, group in zip(self.need(r), self.pool.groups):
            if need > group.n_blocks:
                kind = f"{group.window}-position sliding-window " if group.window else ""
                return (f"the request needs {need} KV blocks of {self.pool.block_tokens} tokens but the {kind}"
                        f"pool has {group.n_blocks}")
        return None

    def outstanding(self) -> list[int]:
        total = [0] * len(self.pool.groups)
        for r in self.reservations:
            total = [t + n for t, n in zip(total, self.need(r))]
        return total

    def try_admit(self, r: Reservation) -> bool:
        """Reserve r if every group's free blocks cover its need beside the others'."""
        if any(need > group.n_free - out
               for need, group, out in zip(self.need(r), self.pool.groups, self.outstanding())):
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
