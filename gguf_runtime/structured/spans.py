"""Split streamed text at marker strings that may arrive cut across deltas (``<think>``, ``</tool_call>``...).

The reasoning and tool-call parsers both see generated text in arbitrary pieces and must find tags in it
without ever emitting half a tag as content; this is that one piece of logic.
"""

from __future__ import annotations


def held_back(text: str, marker: str) -> int:
    """How many trailing characters of `text` could be the start of `marker` (they must wait for more text)."""
    for k in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-k:]):
            return k
    return 0


class MarkerScanner:
    """Buffers streamed text and finds the next occurrence of one of some markers.

    `feed` adds text; `take(markers)` returns ``(before, marker)`` for the first marker found (the text before
    it and the marker itself are consumed), or ``(safe_text, None)`` with every character that cannot be part
    of a marker yet. `flush` returns whatever is still held.
    """

    def __init__(self) -> None:
        self._buffer = ""

    def feed(self, text: str) -> None:
        self._buffer += text

    def take(self, markers: tuple[str, ...]) -> tuple[str, str | None]:
        hits = [(i, m) for m in markers if (i := self._buffer.find(m)) >= 0]
        if hits:
            i, marker = min(hits)
            before, self._buffer = self._buffer[:i], self._buffer[i + len(marker):]
            return before, marker
        keep = max((held_back(self._buffer, m) for m in markers), default=0)
        cut = len(self._buffer) - keep
        safe, self._buffer = self._buffer[:cut], self._buffer[cut:]
        return safe, None

    def flush(self) -> str:
        rest, self._buffer = self._buffer, ""
        return rest

    @property
    def pending(self) -> str:
        return self._buffer
