"""BPE pre-tokenizers: split text into words the way llama.cpp does for each `tokenizer.ggml.pre`.

llama.cpp runs a list of regexes one after another; each one splits every piece left by the previous one into
its matches and the gaps between them. Regexes that use Unicode categories run on a "collapsed" copy of the
text (one stand-in character per category, see unicode_classes), the others on the text with non-ASCII
whitespace turned into \\v. The GPT-2, Llama-3 and Qwen2 regexes are hand-written scanners in llama.cpp; the
patterns below are regexes that split exactly like those scanners (same classes, same fallbacks), so Python's
`re` engine can do the work in C.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

from .unicode_classes import ascii_spaces, collapse

# Character-class bodies for the collapsed alphabet: ASCII members per llama.cpp's tables + the stand-in.
L = "A-Za-z\xd2"
N = "0-9\xd1"
P = r"!-#%-*,-/:;?@\[-\]_{}\xd3"
S = r"$+<->^`|~\xd5"
M = "\xd4"

_CONTRACTIONS_ANY_CASE = "'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]"

GPT2 = rf"'s|'t|'re|'ve|'m|'ll|'d| ?[{L}]+| ?[{N}]+| ?[^\s{L}{N}]+|\s+(?!\S)|\s+"
LLAMA3 = (rf"{_CONTRACTIONS_ANY_CASE}|[^\r\n{L}{N}]?[{L}]+|[{N}]{{1,3}}| ?[^\s{L}{N}]+[\r\n]*|\s*[\r\n]+"
          r"|\s+(?!\S)|\s+")
QWEN2 = (rf"{_CONTRACTIONS_ANY_CASE}|[^\r\n{L}{N}]?[{L}]+|[{N}]| ?[^\s{L}{N}]+[\r\n]*|\s*[\r\n]+"
         r"|\s+(?!\S)|\s+")
# tekken / gpt-4o: llama.cpp spells \p{Lu}... as "a letter that is not a-z" / "not A-Z"; on the collapsed
# text a non-ASCII letter (either case) is the one stand-in, so it belongs to both classes
UPPER = "A-Z\xd2"
LOWER = "a-z\xd2"
_CAPITALISED = rf"[^\r\n{L}{N}]?[{UPPER}]*[{LOWER}]+{{c}}|[^\r\n{L}{N}]?[{UPPER}]+[{LOWER}]*{{c}}"
_TAIL = r"| ?[^\s" + L + N + r"]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
TEKKEN = _CAPITALISED.format(c="") + rf"|[{N}]" + _TAIL
GPT4O = _CAPITALISED.format(c=f"(?:{_CONTRACTIONS_ANY_CASE})?") + rf"|[{N}]{{1,3}}" + _TAIL
SINGLE_DIGIT = f"[{N}]"
DIGITS = f"[{N}]+"
ASCII_TRIPLE_DIGITS = "[0-9][0-9][0-9]"
# poro/bloom/viking: runs up to whitespace or sentence punctuation
NORDIC_WORDS = r" ?[^(\s|.,!?\u2026\u3002\uff0c\u3001\u0964\u06d4\u060c)]+"
CJK_HANGUL = r"[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"
CJK_KANA = r"[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+"

# deepseek-llm: letters listed explicitly in the upstream tokenizer.json (no \p{..}: runs on the plain text).
_DEEPSEEK_LLM_LETTERS = (
    r"\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af"
    r"\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5"
    r"\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba"
    r"\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45"
    r"\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe"
    r"\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102"
    r"\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139"
    r"\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3"
    r"\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06"
    r"\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3"
    r"\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df"
    r"\U0001e900-\U0001e943]+"
)
_DEEPSEEK_LLM_PUNCTUATION = r"\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+"
_DEEPSEEK_V3_MAIN = (
    rf"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{{|}}~][A-Za-z]+|[^\r\n{L}{P}{S}]?[{L}{M}]+| ?[{P}{S}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass(frozen=True)
class Split:
    """One regex pass: `collapsed` says whether it runs on the collapsed text or the plain one."""

    pattern: re.Pattern
    collapsed: bool


def _c(pattern: str) -> Split:
    return Split(re.compile(pattern, re.ASCII), True)


def _raw(pattern: str) -> Split:
    return Split(re.compile(pattern, re.ASCII), False)


@dataclass(frozen=True)
class PreTokenizer:
    """The regex passes for one `tokenizer.ggml.pre` family, plus the vocab flags that family sets."""

    name: str
    splits: tuple[Split, ...]
    clean_spaces: bool = True
    ignore_merges: bool = False
    add_bos: bool = False


def _family(name, splits, **flags) -> PreTokenizer:
    return PreTokenizer(name, tuple(splits), **flags)


_DEFAULT = _family("default", [_c(rf"[{P}$+<=>^~|]+"), _c(GPT2), _c(DIGITS), _c(ASCII_TRIPLE_DIGITS)])
_GPT2 = _family("gpt2", [_c(GPT2)])
_LLAMA3 = _family("llama3", [_c(LLAMA3)], ignore_merges=True, add_bos=True)
_QWEN2 = _family("qwen2", [_c(QWEN2)], clean_spaces=False)
_STARCODER = _family("starcoder", [_c(SINGLE_DIGIT), _c(GPT2)])
_PORO = _family("poro", [_raw(NORDIC_WORDS)])

# `tokenizer.ggml.pre` value -> pre-tokenizer, following llama_vocab::impl::load.
PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    "default": _DEFAULT,
    **dict.fromkeys(["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
                     "jina-v5-nano"], _LLAMA3),
    **dict.fromkeys(["dbrx", "smaug-bpe"], _family("dbrx", [_c(LLAMA3)])),
    **dict.fromkeys(["gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0",
                     "mellum", "modern-bert", "mpt", "olmo", "jais", "exaone4"], _GPT2),
    **dict.fromkeys(["trillion", "granite-docling"], _family("gpt2-verbatim", [_c(GPT2)], clean_spaces=False)),
    **dict.fromkeys(["qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "hunyuan", "solar-open", "grok-2"], _QWEN2),
    **dict.fromkeys(["stablelm2", "megrez"], _family("stablelm2", [_c(QWEN2)])),
    **dict.fromkeys(["starcoder", "refact", "codeshell", "exaone", "minerva-7b", "mellum2"], _STARCODER),
    **dict.fromkeys(["smollm", "command-r"],
                    _family("smollm", [_c(SINGLE_DIGIT), _c(GPT2)], clean_spaces=False)),
    "falcon": _family("falcon", [_c(rf"[{P}$+<=>^~|`]+"), _c(GPT2), _c(ASCII_TRIPLE_DIGITS)]),
    "deepseek-llm": _family(
        "deepseek-llm",
        [_raw("[\r\n]"), _raw(_DEEPSEEK_LLM_LETTERS), _raw(_DEEPSEEK_LLM_PUNCTUATION), _raw(r"\s+\Z"),
         _raw(CJK_HANGUL), _c(DIGITS)],
        clean_spaces=False),
    "deepseek-coder": _family(
        "deepseek-coder",
        [_raw("[\r\n]"), _c(rf"\s?[{L}]+"), _c(rf"\s?[{P}]+"), _raw(CJK_HANGUL), _c(SINGLE_DIGIT)],
        clean_spaces=False),
    "deepseek-v3": _family(
        "deepseek-v3", [_c(f"[{N}]{{1,3}}"), _raw(CJK_KANA), _c(_DEEPSEEK_V3_MAIN)], clean_spaces=False),
    "poro-chat": _family("poro-chat", [_raw(NORDIC_WORDS)], clean_spaces=False),
    "bloom": _PORO,
    "gpt3-finnish": _PORO,
    "tekken": _family("tekken", [_c(TEKKEN)], clean_spaces=False, ignore_merges=True, add_bos=True),
    **dict.fromkeys(["gpt-4o", "llama4"], _family("gpt-4o", [_c(GPT4O)], clean_spaces=False)),
    "viking": _family("viking", [_raw(NORDIC_WORDS), _c(SINGLE_DIGIT)], clean_spaces=False),
}


def pre_tokenizer_for(pre: str | None) -> PreTokenizer:
    """The pre-tokenizer for a `tokenizer.ggml.pre` value; missing or unknown values fall back to "default"
    with a warning (llama.cpp warns for a missing value and refuses unknown ones)."""
    if not pre:
        warnings.warn("GGUF has no tokenizer.ggml.pre: using the 'default' pre-tokenizer; "
                      "tokenization may differ from the model's own", stacklevel=3)
        return _DEFAULT
    found = PRE_TOKENIZERS.get(pre)
    if found is None:
        warnings.warn(f"unknown pre-tokenizer {pre!r}: using 'default'; tokenization may differ from the "
                      "model's own", stacklevel=3)
        return _DEFAULT
    return found


def split_words(text: str, pre: PreTokenizer) -> list[str]:
    """The words `text` splits into; their concatenation is `text`."""
    spans = [(0, len(text))] if text else []
    collapsed = plain = None
    for split in pre.splits:
        if split.collapsed:
            subject = collapsed = collapsed if collapsed is not None else collapse(text)
        else:
            subject = plain = plain if plain is not None else ascii_spaces(text)
        spans = _split_spans(split.pattern, subject, spans)
    return [text[start:end] for start, end in spans]


def _split_spans(pattern: re.Pattern, subject: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Each span becomes its matches and the unmatched gaps between them (llama.cpp's regex split)."""
    out = []
    append = out.append
    for start, end in spans:
        pos = start
        for match in pattern.finditer(subject, start, end):
            m_start, m_end = match.span()
            if m_start > pos:
                append((pos, m_start))
            append((m_start, m_end))
            pos = m_end
        if pos < end:
            append((pos, end))
    return out
