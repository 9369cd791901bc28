"""Codepoint classes as llama.cpp's unicode tables define them, and the one-char-per-codepoint "collapsed" text
the pre-tokenizer regexes run on.

llama.cpp classifies codepoints with tables generated from the Unicode 15.1 database. We use Python's
`unicodedata` (Unicode 14.0 on Python 3.11) plus the codepoints assigned in 15.0/15.1, so rare new characters
(Kawi, Nag Mundari, CJK extension I, new emoji...) get the same class as in llama.cpp. Characters assigned after
15.1 (only present when Python's own database is newer) would differ; none of them is common.
"""

from __future__ import annotations

import unicodedata

# The Unicode White_Space property, which is what llama.cpp's `\s` means (not str.isspace: no \x1c-\x1f).
WHITESPACE = frozenset(
    [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
     0x2028, 0x2029, 0x202F, 0x205F, 0x3000]
)

# Collapsed stand-ins, as in llama.cpp's unicode_regex_split: ASCII stays itself, other codepoints become one
# character per class, so ASCII-only regexes with class brackets can match Unicode categories.
NUMBER, LETTER, PUNCTUATION, MARK, SYMBOL, OTHER, SPACE = "\xd1", "\xd2", "\xd3", "\xd4", "\xd5", "\xd0", "\x0b"

_MAJOR_CLASS = {"N": NUMBER, "L": LETTER, "P": PUNCTUATION, "M": MARK, "S": SYMBOL}

# Codepoints unassigned in Unicode 14.0 but assigned by 15.0/15.1: (first, last, major category).
_UNICODE_15_ADDITIONS = (
    (0x00CF3, 0x00CF3, "M"), (0x00ECE, 0x00ECE, "M"), (0x02FFC, 0x02FFF, "S"), (0x031EF, 0x031EF, "S"),
    (0x10EFD, 0x10EFF, "M"), (0x1123F, 0x11240, "L"), (0x11241, 0x11241, "M"), (0x11B00, 0x11B09, "P"),
    (0x11F00, 0x11F01, "M"), (0x11F02, 0x11F02, "L"), (0x11F03, 0x11F03, "M"), (0x11F04, 0x11F10, "L"),
    (0x11F12, 0x11F33, "L"), (0x11F34, 0x11F3A, "M"), (0x11F3E, 0x11F42, "M"), (0x11F43, 0x11F4F, "P"),
    (0x11F50, 0x11F59, "N"), (0x1342F, 0x1342F, "L"), (0x13439, 0x1343F, "C"), (0x13440, 0x13440, "M"),
    (0x13441, 0x13446, "L"), (0x13447, 0x13455, "M"), (0x1B132, 0x1B132, "L"), (0x1B155, 0x1B155, "L"),
    (0x1D2C0, 0x1D2D3, "N"), (0x1DF25, 0x1DF2A, "L"), (0x1E030, 0x1E06D, "L"), (0x1E08F, 0x1E08F, "M"),
    (0x1E4D0, 0x1E4EB, "L"), (0x1E4EC, 0x1E4EF, "M"), (0x1E4F0, 0x1E4F9, "N"), (0x1F6DC, 0x1F6DC, "S"),
    (0x1F774, 0x1F776, "S"), (0x1F77B, 0x1F77F, "S"), (0x1F7D9, 0x1F7D9, "S"), (0x1FA75, 0x1FA77, "S"),
    (0x1FA87, 0x1FA88, "S"), (0x1FAAD, 0x1FAAF, "S"), (0x1FABB, 0x1FABD, "S"), (0x1FABF, 0x1FABF, "S"),
    (0x1FACE, 0x1FACF, "S"), (0x1FADA, 0x1FADB, "S"), (0x1FAE8, 0x1FAE8, "S"), (0x1FAF7, 0x1FAF8, "S"),
    (0x2B739, 0x2B739, "L"), (0x2EBF0, 0x2EE5D, "L"), (0x31350, 0x323AF, "L"),
)


def major_category(cp: int) -> str:
    """First letter of the Unicode general category as llama.cpp's tables have it ("L", "N", ..., "C")."""
    category = unicodedata.category(chr(cp))
    if category == "Cn":
        for first, last, major in _UNICODE_15_ADDITIONS:
            if first <= cp <= last:
                return major
    return category[0]


def collapsed_char(cp: int) -> str:
    """The stand-in for codepoint `cp` in collapsed text."""
    if cp < 0x80:
        return chr(cp)
    if cp in WHITESPACE:
        return SPACE
    return _MAJOR_CLASS.get(major_category(cp), OTHER)


class _CollapseTable(dict):
    """str.translate table filled on first sight of each codepoint (building all 1.1M up front is slow)."""

    def __missing__(self, cp: int) -> str:
        self[cp] = ch = collapsed_char(cp)
        return ch


class _SpaceTable(dict):
    """str.translate table that only turns non-ASCII whitespace into \\v (llama.cpp's std::wregex input)."""

    def __missing__(self, cp: int) -> int:
        self[cp] = out = 0x0B if cp >= 0x80 and cp in WHITESPACE else cp
        return out


_COLLAPSE = _CollapseTable()
_SPACES = _SpaceTable()


def collapse(text: str) -> str:
    """One character per codepoint: ASCII kept, the rest replaced by its class stand-in."""
    return text.translate(_COLLAPSE)


def ascii_spaces(text: str) -> str:
    """Text with every non-ASCII whitespace codepoint replaced by \\v, other codepoints kept."""
    return text.translate(_SPACES)
