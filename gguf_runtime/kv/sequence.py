"""One sequence's view of the KV pool: its tokens and its block tables, and the only (block, slot) arithmetic.

Position i of a sequence holds the K/V of tokens[i], in each layer group's block tables[g][i // block_tokens]
at slot i % block_tokens. Sequences share blocks by reference:

- `fork()` gives a second sequence the same blocks (n > 1 samples of one prompt compute the prompt once);
  whichever writes into a shared block first copies it (copy-on-write at the divergence);
- every full block is registered in the pool under a hash of all tokens up to its end; `reuse_prefix`
  appends registered blocks another sequence computed. A released sequence also registers the prefixes of
  its last blocks, so reuse can stop at any token, not only at a block boundary.

A sliding-window group (pool.py) lets go of the blocks no future query reads: `prepare` releases those
wholly before the window of the next pass (entry -1 in the table), except those of the last W - 1 of the
first `keep` positions, which a context shift keeps and a window after it may read again. What a group no
longer holds is a few ranges of positions (`_lost`); a sequence can continue from position n only where no
layer lacks what a query at n reads (`holds`). So truncating far back (a chat turn diverging early) or reusing a
cached prefix whose window blocks were evicted recomputes instead, as llama.cpp does without swa_full.

The context shift works on the same structure: keep the first n_keep positions, drop the n_discard after
them, move the rest down and re-rotate their keys by -n_discard (RoPE rotations compose), which is what
llama.cpp's context shift does; like it, the kept keys are re-rotated by 0, a no-op but under YaRN, whose
magnitude factor then scales them too. Freed tail blocks return to the pool.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..attention import gather_rows, store_rows
from ..errors import ContextLengthError, PoolFullError
from .pool import KVPool, chain_hash

Ranges = tuple[tuple[int, int], ...]  # sorted, disjoint [a, b) ranges of positions


class KVCache:
    """One sequence in a pool: its tokens (position i holds tokens[i]) and the blocks holding their K/V."""

    def __init__(self, pool: KVPool, n_ctx: int, keep: int = 0):
        self.pool = pool
        self.n_ctx = n_ctx
        self.keep = keep  # leading positions a context shift keeps: sliding groups hold what windows reach
        self.tokens: list[int] = []
        self.tables: list[list[int]] = [[] for _ in pool.groups]  # per layer group; -1: a block let go of
        self._lost: list[Ranges] = [()] * len(pool.groups)  # per group: positions whose K/V it let go of
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

    @property
    def blocks(self) -> list[int]:
        """The first layer group's block table (every layer's, when sliding layers have no pool of their own)."""
        return self.tables[0]

    def blocks_for(self, n_tokens: int) -> int:
        return -(-n_tokens // self.pool.block_tokens)

    def held(self, g: int) -> list[int]:
        """The blocks group g holds for this sequence."""
        return [b for b in self.tables[g] if b >= 0]

    def _needed_from(self, g: int, n: int) -> int:
        """The first position group g's layers read for a query at position n."""
        window = self.pool.groups[g].window
        return max(0, n + 1 - window) if window else 0

    def _pinned(self, g: int, n: int) -> range:
        """Blocks of group g a sequence of n positions keeps for a context shift: those of the last W - 1 of
        its first `keep` positions (a window after the shift reaches back no further)."""
        return pinned_blocks(min(self.keep, n), self.pool.groups[g].window, self.pool.block_tokens)

    def _holds(self, lost: list[Ranges], n: int) -> bool:
        bt = self.pool.block_tokens
        for g, ranges in enumerate(lost):
            pinned = self._pinned(g, n)
            if _overlaps(ranges, self._needed_from(g, n), n) or \
                    _overlaps(ranges, max(pinned.start * bt, self.keep - self.pool.groups[g].window + 1),
                              min(self.keep, n)):
                return False
        return True

    def holds(self, n: int) -> bool:
        """Whether every layer still has the K/V a query at position n reads, and the kept positions a window
        may read after a context shift: the sequence can continue from n (n <= self.n)."""
        return self._holds(self._lost, n)

    def _lose(self, g: int, a: int, b: int) -> None:
        """Group g no longer holds positions a..b-1."""
        self._lost[g] = _union(self._lost[g], a, b)

    def _inside_lost(self, g: int, i: int) -> bool:
        bt = self.pool.block_tokens
        return any(a <= i * bt and (i + 1) * bt <= b for a, b in self._lost[g])

    def _let_go(self, g: int) -> None:
        """A sliding group releases the blocks wholly before the window of a query at n (not the pinned ones)."""
        if not self.pool.groups[g].window:
            return
        bt, table = self.pool.block_tokens, self.tables[g]
        first, pinned = self._needed_from(g, self.n) // bt, self._pinned(g, self.n)
        for i in range(min(first, len(table))):
            if table[i] >= 0 and i not in pinned:
                self.pool.groups[g].release(table[i], reuse_first=True)
                table[i] = -1
        for a, b in ((0, min(pinned.start, first)), (pinned.stop, first)):
            if a < b:
                self._lose(g, a * bt, b * bt)

    def prepare(self, n_new: int) -> None:
        """Make positions n..n+n_new-1 writable: let go of blocks before the window, allocate blocks, copy or
        unregister a partial tail block."""
        if n_new <= 0:
            return
        if self.n + n_new > self.n_ctx:
            raise ContextLengthError(f"{n_new} tokens at position {self.n} do not fit a context of {self.n_ctx}")
        for g in range(len(self.tables)):
            self._let_go(g)
        bt, end = self.pool.block_tokens, self.blocks_for(self.n + n_new)
        tail = self.n // bt
        for g, (group, table) in enumerate(zip(self.pool.groups, self.tables)):
            need = sum(not self._inside_lost(g, i) for i in range(len(table), end))
            if tail < len(table) and table[tail] >= 0 and group.refs[table[tail]] > 1:
                need += 1
            if need > group.n_free:
                raise PoolFullError(f"{n_new} more tokens need {need} KV blocks, {group.n_free} are free")
        del self._hashes[tail:]
        for g, (group, table) in enumerate(zip(self.pool.groups, self.tables)):
            self._own_from(g, tail, end)
            table.extend(-1 if self._inside_lost(g, i) else group.allocate() for i in range(len(table), end))

    def _own_from(self, g: int, first: int, end: int) -> None:
        """Blocks first..end-1 of group g (those it holds) become private and unregistered."""
        group, table = self.pool.groups[g], self.tables[g]
        for i in range(first, min(end, len(table))):
            block = table[i]
            if block < 0:
                continue
            if group.refs[block] > 1:
                table[i] = group.copy(block)
                group.release(block)
            else:
                group.forget(block)

    def addresses(self, g: int, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(block, slot) of each position (prepared, held) in group g: where its K/V row lives."""
        bt = self.pool.block_tokens
        return np.asarray(self.tables[g], np.int32)[positions // bt], positions % bt

    def store(self, layer: int, start: int, k: np.ndarray, v: np.ndarray) -> None:
        """k, v: (T, H_kv, hd) float32 for positions start..start+T-1 (prepared)."""
        g, K, V = self.pool.layer(layer)
        blk, slot = self.addresses(g, np.arange(start, start + k.shape[0]))
        store_rows(self.pool.code, K, V, blk, slot,
                   np.ascontiguousarray(k, np.float32), np.ascontiguousarray(v, np.float32))

    def rows(self, layer: int, n: int | None = None, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Cached positions start..n-1 of a layer (default: all), dequantized: k, v each float32 (H_kv, n, hd).
        ValueError where the layer's group no longer holds some of them."""
        n = self.n if n is None else n
        g, K, V = self.pool.layer(layer)
        if _overlaps(self._lost[g], start, n):
            raise ValueError(f"layer {layer} no longer holds some of positions {start}..{n - 1} (a sliding window)")
        base = start - start % self.pool.block_tokens
        table = np.asarray(self.tables[g][base // self.pool.block_tokens:], np.int32)
        shape = (self.pool.n_kv_heads, n - base, self.pool.head_dim)
        k, v = np.empty(shape, np.float32), np.empty(shape, np.float32)
        gather_rows(self.pool.code, K, table, n - base, k)
        gather_rows(self.pool.code, V, table, n - base, v)
        return k[:, start - base:], v[:, start - base:]

    def saved_rows(self) -> tuple[np.ndarray, np.ndarray, Ranges]:
        """Every position's raw K and V rows in the pool's type, each (n, n_layers, H_kv, row_bytes), zero
        where a sliding group no longer holds them, and those ranges of positions."""
        pool = self.pool
        shape = (self.n, pool.n_layers, pool.n_kv_heads, pool.qtype.row_bytes(pool.head_dim))
        k, v = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
        for g, group in enumerate(pool.groups):
            pos = _held_positions(self._lost[g], self.n)
            blk, slot = self.addresses(g, pos)
            k[np.ix_(pos, group.layers)] = group.k[:, blk, :, slot]  # (P, layers of the group, H_kv, rb)
            v[np.ix_(pos, group.layers)] = group.v[:, blk, :, slot]
        lost: Ranges = ()
        for ranges in self._lost:
            for a, b in ranges:
                lost = _union(lost, a, b)
        return k, v, lost

    def restore(self, tokens, k: np.ndarray, v: np.ndarray, lost: Ranges) -> None:
        """Replace the content with saved_rows' (rows of positions in `lost` are missing from sliding layers).
        ValueError where layers that keep every position would lack some, or the windows would."""
        n, bt = len(tokens), self.pool.block_tokens
        if lost and any(not group.window and any(self.pool.windows[i] for i in group.layers)
                        for group in self.pool.groups):
            raise ValueError("saved with sliding layers holding only their window; this pool keeps every position")
        after: list[Ranges] = []  # what each group will lack: a sliding one takes only what windows read
        for g, group in enumerate(self.pool.groups):
            ranges: Ranges = ()
            if group.window:
                first, pinned = self._needed_from(g, n) // bt, self._pinned(g, n)
                for a, b in list(lost) + [(0, min(pinned.start, first) * bt), (pinned.stop * bt, first * bt)]:
                    ranges = _union(ranges, a, b) if a < b else ranges
            after.append(ranges)
        if not self._holds(after, n):
            raise ValueError("the saved sliding-layer rows do not cover the window of the next position")
        self.truncate(0)
        self._lost = after
        self.prepare(n)
        for g, group in enumerate(self.pool.groups):
            pos = _held_positions(self._lost[g], n)
            blk, slot = self.addresses(g, pos)
            group.k[:, blk, :, slot] = k[np.ix_(pos, group.layers)]
            group.v[:, blk, :, slot] = v[np.ix_(pos, group.layers)]
        self.commit(tokens)

    def commit(self, tokens) -> None:
        """Record tokens whose K/V were just stored and register the blocks they complete."""
        self.tokens.extend(int(t) for t in tokens)
        bt = self.pool.block_tokens
        clean = self.n // bt if self._shifted_from is None else min(self.n // bt, self._shifted_from)
        for i in range(len(self._hashes), clean):
            parent = self._hashes[-1] if self._hashes else b""
            key = chain_hash(parent, self.tokens[i * bt:(i + 1) * bt])
            self._register(i, key)
            self._hashes.append(key)

    def _register(self, i: int, key: bytes) -> None:
        """Block i of every group that holds it stands for the tokens `key` hashes."""
        for group, table in zip(self.pool.groups, self.tables):
            if table[i] >= 0:
                group.register(table[i], key)

    def reuse_prefix(self, tokens, limit: int) -> int:
        """Append cached blocks of the pool that hold tokens[n:limit]; returns how many tokens were taken.

        Full-context groups need every block of the prefix, sliding groups only those the window of the next
        query (and the kept positions) reads, so the prefix taken is the longest one all groups still have
        cached: whole blocks, or a prefix of the next block a finished sequence left behind (see release).
        Works only from a block boundary, which is where registered blocks start."""
        bt, groups = self.pool.block_tokens, self.pool.groups
        if self.n % bt or len(self._hashes) != self.n // bt or any(self._lost):
            return 0
        limit = min(limit, self.n_ctx)
        start = self.n // bt
        full = [group for group in groups if not group.window]
        keys = list(self._hashes)  # chain hash of every whole block the full-context groups have cached
        while (len(keys) + 1) * bt <= limit:
            chunk = [int(t) for t in tokens[len(keys) * bt:(len(keys) + 1) * bt]]
            key = chain_hash(keys[-1] if keys else b"", chunk)
            if any(group.lookup(key) is None for group in full):
                break
            keys.append(key)
        candidates: list[tuple[int, bytes | None]] = []  # (prefix end, key of its partial last block)
        whole = len(keys) * bt
        for m in range(min(bt - 1, limit - whole), 0, -1):
            key = chain_hash(keys[-1] if keys else b"", [int(t) for t in tokens[whole:whole + m]])
            if all(group.lookup(key) is not None for group in full):
                candidates.append((whole + m, key))
                break
        candidates += [(j * bt, None) for j in range(len(keys), start, -1)]
        for m, partial in candidates:
            taken = self._cached_blocks(keys, m, partial)
            if taken is not None:
                break
        else:
            return 0
        for g, row in enumerate(taken):
            for block in row:
                if block >= 0:
                    groups[g].retain(block)
            for i, block in enumerate(row):
                if block < 0:
                    self._lose(g, (start + i) * bt, (start + i + 1) * bt)
            self.tables[g].extend(row)
        self._hashes = keys[:m // bt]
        self.tokens.extend(int(t) for t in tokens[self.n:m])
        return m - start * bt

    def _cached_blocks(self, keys: list[bytes], m: int, partial: bytes | None) -> list[list[int]] | None:
        """For continuing at position m: each group's cached blocks for table entries n/bt.. (-1 where a
        sliding group needs none), or None when a needed one is no longer cached."""
        bt = self.pool.block_tokens
        start, end = self.n // bt, self.blocks_for(m)
        taken = []
        for g, group in enumerate(self.pool.groups):
            first, pinned = self._needed_from(g, m) // bt, self._pinned(g, m)
            row = []
            for i in range(start, end):
                if i < first and i not in pinned:
                    row.append(-1)
                    continue
                block = group.lookup(partial if partial is not None and i == end - 1 else keys[i])
                if block is None:
                    return None
                row.append(block)
            taken.append(row)
        return taken

    def truncate(self, n: int) -> None:
        """Forget positions n.. (speculative rollback, prompt reuse); whole blocks past n go back to the pool.
        Continuing from n needs `holds(n)` (see rewind)."""
        if not 0 <= n <= self.n:
            raise ValueError(f"cannot truncate a cache of {self.n} positions to {n}")
        del self.tokens[n:]
        del self._hashes[n // self.pool.block_tokens:]
        keep = self.blocks_for(n)
        for g, (group, table) in enumerate(zip(self.pool.groups, self.tables)):
            for block in table[keep:]:
                if block >= 0:
                    group.release(block)
            del table[keep:]
            self._lost[g] = _clip(self._lost[g], n)

    def rewind(self, n: int) -> int:
        """Truncate to n where the sequence can continue from there, else to 0 (a sliding layer let go of what
        a query at n reads: everything is recomputed). Returns the positions kept."""
        n = n if self.holds(n) else 0
        self.truncate(n)
        return n

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
                    self._register(i, chain_hash(parent, held[:m]))
        self.truncate(0)

    def fork(self) -> "KVCache":
        """A second sequence sharing all of this one's blocks; either copies a block before writing to it."""
        other = KVCache(self.pool, self.n_ctx, self.keep)
        for g, group in enumerate(self.pool.groups):
            for block in self.held(g):
                group.retain(block)
        other.tables = [list(t) for t in self.tables]
        other._lost = list(self._lost)
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

    def make_room(self, n_new: int, n_keep: int, rotate_keys: Callable[[int, np.ndarray, int, int], None]) -> None:
        """llama.cpp's context shift, when n_new more tokens would not fit: keep n_keep, discard half of the
        rest (at least enough for n_new). Raises ContextLengthError when even that cannot make room."""
        if self.n + n_new <= self.n_ctx:
            return
        n_keep = min(max(n_keep, 0), self.n - 1)
        n_discard = max((self.n - n_keep) // 2, n_new - self.free)
        if n_keep + n_discard > self.n or n_new > self.n_ctx - n_keep:
            raise ContextLengthError(f"{n_new} tokens do not fit a context of {self.n_ctx} keeping {n_keep}")
        self.shift(n_keep, n_discard, rotate_keys)

    def shift(self, n_keep: int, n_discard: int, rotate_keys: Callable[[int, np.ndarray, int, int], None]) -> None:
        """Drop positions n_keep..n_keep+n_discard-1 and slide the rest down by n_discard.

        rotate_keys(layer, keys, delta, n_ctx) re-rotates one layer's keys (T, H_kv, hd) in place by delta
        positions (in a context of n_ctx). ContextLengthError, before anything changes, where a sliding layer
        would then lack kept positions its window reads (it let go of them: n_keep > the sequence's keep).
        """
        if n_discard <= 0 or n_keep + n_discard > self.n:
            raise ValueError(f"bad context shift: keep {n_keep}, discard {n_discard} of {self.n}")
        src, end = n_keep + n_discard, self.n
        # per group: the first moved position after all it let go of, and what it lacks after the shift
        moved_from = [max([src] + [b for _, b in ranges if b > src]) for ranges in self._lost]
        lost = [_union(_clip(ranges, n_keep), n_keep, n_keep + first - src) if first > src else _clip(ranges, n_keep)
                for ranges, first in zip(self._lost, moved_from)]
        if not self._holds(lost, n_keep + end - src):
            raise ContextLengthError(f"cannot shift keeping {n_keep} positions: the sliding layers kept only "
                                     f"{self.keep}")
        moved = [self.rows(layer, end, moved_from[self.pool.layer_group[layer][0]])
                 for layer in range(self.pool.n_layers)]
        # llama.cpp re-rotates every cached key on a shift, the kept ones by 0: under YaRN that multiplies them
        # by its magnitude factor (cos 0 · mscale) as it does the moved ones; elsewhere a rotation by 0 is exact
        rescaled = []  # (layer, first position, keys, values) of kept positions that rotation changes
        for layer in range(self.pool.n_layers):
            for a, b in _held_ranges(self._lost[self.pool.layer_group[layer][0]], n_keep):
                k, v = (x.transpose(1, 0, 2) for x in self.rows(layer, b, a))  # (T, H_kv, hd)
                keys = k.copy()
                rotate_keys(layer, keys, 0, self.n_ctx)
                if not np.array_equal(keys, k):
                    rescaled.append((layer, a, keys, v))
        kept_tokens = self.tokens[src:end]
        self.truncate(n_keep)
        self._lost = lost
        first = n_keep // self.pool.block_tokens
        self._shifted_from = first if self._shifted_from is None else min(first, self._shifted_from)
        self.prepare(end - src)  # (blocks wholly inside a lost range are not allocated)
        for layer, (k, v) in enumerate(moved):
            keys = k.transpose(1, 0, 2).copy()  # (T, H_kv, hd)
            rotate_keys(layer, keys, -n_discard, self.n_ctx)
            start = n_keep + moved_from[self.pool.layer_group[layer][0]] - src
            self.store(layer, start, keys, v.transpose(1, 0, 2))
        if rescaled:  # the kept blocks change too: made private, and no longer any prefix's
            del self._hashes[:]
            self._shifted_from = 0
            for g in range(len(self.tables)):
                self._own_from(g, 0, self.blocks_for(n_keep))
            for layer, start, keys, values in rescaled:
                self.store(layer, start, keys, values)
        self.commit(kept_tokens)



def pinned_blocks(keep: int, window: int, block_tokens: int) -> range:
    """Block indices of the last window - 1 of the first `keep` positions (none for a full-context group,
    which lets go of nothing)."""
    if not window or not keep:
        return range(0)
    return range(max(0, keep - window + 1) // block_tokens, -(-keep // block_tokens))


def _union(ranges: Ranges, a: int, b: int) -> Ranges:
    """ranges with [a, b) added, merged."""
    out, merged = [], (a, b)
    for r in ranges:
        if r[1] < merged[0] or merged[1] < r[0]:
            out.append(r)
        else:
            merged = (min(r[0], merged[0]), max(r[1], merged[1]))
    return tuple(sorted(out + [merged]))


def _clip(ranges: Ranges, n: int) -> Ranges:
    """The parts of ranges below n."""
    return tuple((a, min(b, n)) for a, b in ranges if a < n)


def _overlaps(ranges: Ranges, a: int, b: int) -> bool:
    return any(x < b and a < y for x, y in ranges)


def _held_ranges(ranges: Ranges, n: int) -> list[tuple[int, int]]:
    """The ranges of positions 0..n-1 outside `ranges`."""
    held, start = [], 0
    for a, b in ranges:
        if a > start:
            held.append((start, min(a, n)))
        start = max(start, b)
    if start < n:
        held.append((start, n))
    return [(a, b) for a, b in held if a < b]


def _held_positions(ranges: Ranges, n: int) -> np.ndarray:
    """Positions 0..n-1 outside ranges."""
    held = np.ones(n, bool)
    for a, b in ranges:
        held[a:b] = False
    return np.flatnonzero(held)
