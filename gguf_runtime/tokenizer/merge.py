"""What BPE and SPM share: the pair-merging loop (llama.cpp's symbol list + priority queue) and a word cache."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any


def merge_pairs(symbols: list[str], priority: Callable[[str, str], Any]) -> list[str]:
    """Repeatedly join the adjacent pair with the smallest `priority(left, right)` (leftmost on ties) until no
    pair has one (`None`). Returns the final symbols in order."""
    n = len(symbols)
    if n < 2:
        return symbols
    symbols = list(symbols)  # symbol starting at each position; "" once merged into its left neighbour
    nxt = list(range(1, n + 1))
    nxt[-1] = -1
    prv = list(range(-1, n - 1))
    heap: list[tuple[Any, int, int, str]] = []

    def queue(left: int, right: int) -> None:
        if left != -1 and right != -1:
            key = priority(symbols[left], symbols[right])
            if key is not None:
                heapq.heappush(heap, (key, left, right, symbols[left] + symbols[right]))

    for i in range(n - 1):
        queue(i, i + 1)
    while heap:
        _, left, right, text = heapq.heappop(heap)
        left_text, right_text = symbols[left], symbols[right]
        if not left_text or not right_text or left_text + right_text != text:
            continue  # outdated: a side has merged with something else since this pair was queued
        symbols[left], symbols[right] = text, ""
        after = nxt[left] = nxt[right]
        if after != -1:
            prv[after] = left
        queue(prv[left], left)
        queue(left, after)
    return [s for s in symbols if s]


class WordCache(dict):
    """text -> token ids, computed on first lookup; emptied at `limit` entries so memory stays bounded."""

    def __init__(self, compute: Callable[[str], tuple[int, ...]], limit: int = 1 << 17):
        super().__init__()
        self._compute = compute
        self._limit = limit

    def __missing__(self, text: str) -> tuple[int, ...]:
        if len(self) >= self._limit:
            self.clear()
        ids = self[text] = self._compute(text)
        return ids
