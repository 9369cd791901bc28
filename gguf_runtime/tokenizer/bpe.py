"""Byte-level BPE (`tokenizer.ggml.model = gpt2`), merge by merge as llama.cpp's llm_tokenizer_bpe_session."""

from __future__ import annotations

from .merge import WordCache, merge_pairs
from .pretokenize import split_words
from .vocab import Vocab


def _gpt2_byte_chars() -> list[str]:
    """GPT-2's printable stand-in for each byte: printable Latin-1 bytes map to themselves, the rest to U+0100+."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(0x100 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


BYTE_CHARS = _gpt2_byte_chars()
BYTE_OF_CHAR = {ch: b for b, ch in enumerate(BYTE_CHARS)}
_LATIN1_TO_BYTE_CHARS = {b: ch for b, ch in enumerate(BYTE_CHARS)}  # str.translate table over latin-1 text


def byte_encode(word: str) -> str:
    """The word's UTF-8 bytes written with GPT-2 byte characters (how byte-level BPE vocabularies spell it)."""
    return word.encode("utf-8", "surrogatepass").decode("latin-1").translate(_LATIN1_TO_BYTE_CHARS)


class BpeEncoder:
    def __init__(self, vocab: Vocab):
        self._ids = vocab.token_to_id
        self._pre = vocab.pre
        self._ignore_merges = vocab.ignore_merges
        # "left right" -> rank; a merge listed twice keeps its first rank, like llama.cpp's emplace.
        merges = vocab.merges
        self._ranks = dict(zip(reversed(merges), range(len(merges) - 1, -1, -1)))
        self._cache = WordCache(lambda word: self._encode_word(byte_encode(word)))

    def encode(self, text: str, out: list[int]) -> None:
        cache = self._cache
        for word in split_words(text, self._pre):
            out.extend(cache[word])

    def _encode_word(self, word: str) -> tuple[int, ...]:
        ids = self._ids
        if self._ignore_merges and word in ids:
            return (ids[word],)
        out = []
        for symbol in self._merge(word):
            token = ids.get(symbol)
            if token is not None:
                out.append(token)
                continue
            # llama.cpp looks up each byte of the symbol's text as a one-byte token; only ASCII can match.
            for byte in symbol.encode():
                token = ids.get(chr(byte)) if byte < 0x80 else None
                if token is not None:
                    out.append(token)
        return tuple(out)

    def _merge(self, word: str) -> list[str]:
        ranks = self._ranks
        return merge_pairs(list(word), lambda left, right: ranks.get(left + " " + right))
