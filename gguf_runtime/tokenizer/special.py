"""Cutting special tokens out of text before tokenization, as llama.cpp's tokenizer_st_partition: each special
token in turn, longest first, splits every remaining text fragment at each of its occurrences."""

from __future__ import annotations

import re

from .vocab import Attr, Vocab

_C_SPACE = " \t\n\v\f\r"  # C isspace(), used for the lstrip/rstrip token attributes
# Below this many (text length x special tokens), testing each token with `in` beats compiling the trie regex
# (~0.2 s for Gemma's 6k control tokens); once compiled, the regex is always used.
_DIRECT_SCAN_LIMIT = 50_000_000
# The trie regex nests one group per character of the longest token, and building it recurses as deep: past
# this length (only hostile vocabularies have such special tokens) the direct scan is used whatever the text.
MAX_TRIE_DEPTH = 200

Fragment = str | int  # raw text still to tokenize, or a token id


class SpecialSplitter:
    """Splits text at the given special tokens (ids in llama.cpp's longest-first order)."""

    def __init__(self, vocab: Vocab, token_ids: list[int]):
        self._texts = [vocab.tokens[i] for i in token_ids]
        self._ids = token_ids
        self._attrs = [vocab.attrs[i] for i in token_ids]
        self._finder: re.Pattern | None = None  # compiled on first use (can take ~0.1 s for 6k tokens)
        self._trie_ok = max(map(len, self._texts), default=0) <= MAX_TRIE_DEPTH
        self._prefixes: dict[str, list[int]] = {}

    def split(self, text: str) -> list[Fragment]:
        fragments: list[Fragment] = [text]
        for k in self._present(text):
            token_text, token_id, attrs = self._texts[k], self._ids[k], self._attrs[k]
            lstrip, rstrip = bool(attrs & Attr.LSTRIP), bool(attrs & Attr.RSTRIP)
            split: list[Fragment] = []
            for fragment in fragments:
                if isinstance(fragment, str) and token_text in fragment:
                    _cut(fragment, token_text, token_id, lstrip, rstrip, split)
                else:
                    split.append(fragment)
            fragments = split
        return fragments

    def _present(self, text: str) -> list[int]:
        """Indices (in processing order) of the special tokens that occur in `text`.

        Short texts: test each token. Otherwise a trie regex finds the longest special token at each position
        where one starts; every shorter special token starting there is a prefix of it, so those are added."""
        if not self._texts:
            return []
        if self._finder is None and (not self._trie_ok or len(text) * len(self._texts) < _DIRECT_SCAN_LIMIT):
            return [k for k, token_text in enumerate(self._texts) if token_text in text]
        if self._finder is None:
            self._finder = re.compile(_trie_pattern(self._texts))
        found: set[int] = set()
        pos, search = 0, self._finder.search
        while (match := search(text, pos)) is not None:
            found.update(self._prefix_tokens(match.group()))
            pos = match.start() + 1
        return sorted(found)

    def _prefix_tokens(self, longest: str) -> list[int]:
        cached = self._prefixes.get(longest)
        if cached is None:
            cached = self._prefixes[longest] = [k for k, t in enumerate(self._texts) if longest.startswith(t)]
        return cached


def _cut(fragment: str, token_text: str, token_id: int, lstrip: bool, rstrip: bool, out: list[Fragment]) -> None:
    """Append `fragment` split at each occurrence of `token_text` (left to right, non-overlapping)."""
    base, end = 0, len(fragment)
    while (at := fragment.find(token_text, base)) >= 0:
        left_end = at
        if lstrip:
            while left_end > base and fragment[left_end - 1] in _C_SPACE:
                left_end -= 1
        if left_end > base:
            out.append(fragment[base:left_end])
        out.append(token_id)
        base = at + len(token_text)
        if rstrip:
            while base < end and fragment[base] in _C_SPACE:
                base += 1
    if base < end:
        out.append(fragment[base:])


def _trie_pattern(texts: list[str]) -> str:
    """A regex matching the longest of `texts` that starts at a position (common prefixes factored out)."""
    trie: dict = {}
    for text in texts:
        node = trie
        for ch in text:
            node = node.setdefault(ch, {})
        node[""] = {}

    def pattern(node: dict) -> str:
        branches = [re.escape(ch) + pattern(child) for ch, child in node.items() if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if "" in node:  # a token ends here: the longer ones are optional
            return f"(?:{body})?"
        return body

    return pattern(trie)
