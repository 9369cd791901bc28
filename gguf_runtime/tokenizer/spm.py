"""SentencePiece-BPE (`tokenizer.ggml.model = llama`), as llama.cpp's llm_tokenizer_spm_session: merge the
adjacent pair whose concatenation is the highest-scoring token, leftmost on ties; leftover characters that
are not tokens become <0xNN> byte tokens."""

from __future__ import annotations

import re

from .merge import WordCache, merge_pairs
from .vocab import TokenizerError, Vocab

SPACE = "▁"  # U+2581, SentencePiece's visible space

# Cut before every run of ▁ that follows another character: "▁the▁cat" -> "▁the", "▁cat".
_SEGMENT = re.compile(f"{SPACE}*[^{SPACE}]+|{SPACE}+")
_BRIDGE = re.compile(f"[^{SPACE}\0]{SPACE}")


class SpmEncoder:
    def __init__(self, vocab: Vocab):
        self._vocab = vocab
        self._ids = vocab.token_to_id
        self._scores = vocab.scores
        self._bridges: list[str] | None = None  # found on first use
        self._cache = WordCache(self._encode_segment)

    def encode(self, text: str, out: list[int]) -> None:
        """Append the ids of `text`, whose spaces are already written as ▁."""
        cache = self._cache
        for segment in self._segments(text):
            out.extend(cache[segment])

    def _segments(self, text: str) -> list[str]:
        """Pieces no merge can cross, so each can be tokenized (and cached) on its own.

        A merge across a cut before ▁ would form a token with a non-▁ character followed by ▁ inside it
        ("bridge" tokens, e.g. Gemma's ">▁</"), so cuts inside an occurrence of one are not made."""
        spans = [m.span() for m in _SEGMENT.finditer(text)]
        if self._bridges is None:
            self._bridges = _bridge_tokens(self._vocab.tokens)
        blocked = set()
        for bridge in self._bridges:
            at = text.find(bridge)
            while at >= 0:
                blocked.update(range(at + 1, at + len(bridge)))
                at = text.find(bridge, at + 1)
        if not blocked:
            return [text[a:b] for a, b in spans]
        segments, start = [], 0
        for _, end in spans:  # the last end is len(text), never inside an occurrence
            if end not in blocked:
                segments.append(text[start:end])
                start = end
        return segments

    def _encode_segment(self, text: str) -> tuple[int, ...]:
        ids, scores = self._ids, self._scores

        def priority(left: str, right: str) -> float | None:
            token = ids.get(left + right)
            return None if token is None else -scores[token]

        out = []
        for symbol in merge_pairs(list(text), priority):
            token = ids.get(symbol)
            if token is not None:
                out.append(token)
            else:
                out.extend(self._byte_token(b) for b in symbol.encode("utf-8", "surrogatepass"))
        return tuple(out)

    def _byte_token(self, byte: int) -> int:
        token = self._ids.get(f"<0x{byte:02X}>")
        if token is None and byte < 0x80:
            token = self._ids.get(chr(byte))
        if token is None:
            raise TokenizerError(f"vocabulary has no byte token for 0x{byte:02X}")
        return token


def _bridge_tokens(tokens: list[str]) -> list[str]:
    """Tokens with ▁ right after another character, found with one regex pass over all token texts."""
    joined = "\0".join(tokens)
    found = set()
    for match in _BRIDGE.finditer(joined):
        start = joined.rfind("\0", 0, match.start()) + 1
        end = joined.find("\0", match.start())
        found.add(joined[start:end if end >= 0 else len(joined)])
    return sorted(found)
