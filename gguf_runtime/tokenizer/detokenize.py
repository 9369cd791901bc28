"""Token ids back to text, as llama.cpp's token_to_piece and detokenize, whole or streamed."""

from __future__ import annotations

import codecs
import re

import numpy as np

from .bpe import BYTE_OF_CHAR
from .spm import SPACE
from .vocab import Attr, Vocab

_SHOWN_AS_TEXT = Attr.CONTROL | Attr.UNKNOWN | Attr.USER_DEFINED
_HIDDEN_WHEN_SKIPPING = Attr.CONTROL | Attr.UNKNOWN
_BYTE_CHARS_TO_LATIN1 = {ord(ch): b for ch, b in BYTE_OF_CHAR.items()}

# llama.cpp's clean_up_tokenization_spaces passes, in order.
_CLEANUPS = (
    (re.compile(rb" (?=[?!.,])"), b""),             # "a ." -> "a."
    (re.compile(rb" ' "), b"'"),                     # "a ' b" -> "a'b"
    (re.compile(rb" (?='(?:[sm]|re|ve))"), b""),    # "it 's" -> "it's" (not 't, 'd, 'll)
)


class Pieces:
    """The bytes each token stands for (token_to_piece with special=True), computed on first use."""

    def __init__(self, vocab: Vocab):
        self._vocab = vocab
        self._cache: dict[int, bytes] = {}

    def get(self, token_id: int, skip_special: bool = False) -> bytes:
        vocab = self._vocab
        if not 0 <= token_id < vocab.n_vocab:
            raise IndexError(f"token id {token_id} outside the vocabulary (0..{vocab.n_vocab - 1})")
        if skip_special and vocab.attrs[token_id] & _HIDDEN_WHEN_SKIPPING:
            return b""
        piece = self._cache.get(token_id)
        if piece is None:
            piece = self._cache[token_id] = self._compute(token_id)
        return piece

    def all(self) -> list[bytes]:
        """Every token's bytes in id order (special=True), computed in one pass without the per-call checks or
        the cache: what a grammar engine's vocabulary is built from (262k tokens in a fraction of a second)."""
        vocab = self._vocab
        texts, attrs = vocab.tokens, vocab.attrs
        if vocab.model == "gpt2":
            normal = [_byte_level_decode(t) for t in texts]
        else:
            normal = [t.replace(SPACE, " ").encode() for t in texts]
        pieces = [piece if attr & Attr.NORMAL else b"" for piece, attr in zip(normal, attrs)]
        for i in np.flatnonzero(np.asarray(attrs) & ~Attr.NORMAL).tolist():
            pieces[i] = self._compute(i)
        return pieces

    def _compute(self, token_id: int) -> bytes:
        vocab = self._vocab
        text, attr = vocab.tokens[token_id], vocab.attrs[token_id]
        if attr & _SHOWN_AS_TEXT:
            return text.encode()
        if attr & Attr.NORMAL:
            return _byte_level_decode(text) if vocab.model == "gpt2" else text.replace(SPACE, " ").encode()
        if attr & Attr.BYTE:
            return bytes([int(text[3:5], 16)])
        return b""  # unused / undefined tokens print nothing


def _byte_level_decode(text: str) -> bytes:
    """GPT-2 byte characters back to bytes; a character outside the byte map is spelled out as llama.cpp does."""
    mapped = text.translate(_BYTE_CHARS_TO_LATIN1)
    if all(ord(ch) < 256 for ch in mapped):
        return mapped.encode("latin-1")
    out = bytearray()
    for ch in text:
        byte = BYTE_OF_CHAR.get(ch)
        if byte is not None:
            out.append(byte)
        else:
            out += b"[UNK_BYTE_0x" + ch.encode().hex().encode() + text.encode() + b"]"
    return bytes(out)


def clean_up_spaces(data: bytes) -> bytes:
    for pattern, replacement in _CLEANUPS:
        data = pattern.sub(replacement, data)
    return data


def _last_safe_cut(data: bytes) -> int:
    """Largest n such that clean_up_spaces(data[:n] + rest) == clean_up_spaces(data[:n]) + clean_up_spaces(rest)
    for any rest: the 3 bytes before the cut hold no space or apostrophe (every pattern starts with a space and
    looks at most 3 bytes past it)."""
    n = len(data)
    while n > 0:
        window = data[max(0, n - 3):n]
        bad = max(window.rfind(b" "), window.rfind(b"'"))
        if bad < 0:
            return n
        n = max(0, n - 3) + bad
    return 0


class ByteStream:
    """Turns a token stream into UTF-8 text exactly as decoding the whole sequence would, emitting only complete
    characters: leading-space removal on the first token, llama.cpp's space clean-up, then UTF-8 (invalid bytes
    become U+FFFD)."""

    def __init__(self, vocab: Vocab, pieces: Pieces, skip_special: bool):
        self._pieces = pieces
        self._skip_special = skip_special
        self._strip_first_space = vocab.add_space_prefix
        self._clean = vocab.clean_spaces
        self._first = True
        self._held = b""  # bytes whose space clean-up depends on what comes next
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")

    def push(self, token_id: int) -> str:
        piece = self._pieces.get(token_id, self._skip_special)
        if self._first:
            self._first = False
            if self._strip_first_space and piece.startswith(b" "):
                piece = piece[1:]
        if self._clean:
            data = self._held + piece
            cut = _last_safe_cut(data)
            self._held = data[cut:]
            piece = clean_up_spaces(data[:cut])
        return self._utf8.decode(piece)

    def flush(self) -> str:
        data = clean_up_spaces(self._held) if self._clean else b""
        self._held = b""
        return self._utf8.decode(data, final=True)
