"""Tokenizer rules on small hand-made vocabularies: llama.cpp behaviours the real-model fixtures rarely reach."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gguf_runtime.tokenizer import StreamDecoder, Tokenizer, TokenizerError
from gguf_runtime.tokenizer.bpe import BYTE_CHARS, byte_encode
from gguf_runtime.tokenizer.pretokenize import PRE_TOKENIZERS, split_words

NORMAL, CONTROL, USER_DEFINED, BYTE = 1, 3, 4, 6


def metadata(model: str, tokens: list[str], types: list[int] | None = None, scores: list[float] | None = None,
             merges: list[str] | None = None, **extra) -> dict:
    meta = {"tokenizer.ggml.model": model, "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": np.array(types or [NORMAL] * len(tokens), dtype=np.int32)}
    if scores is not None:
        meta["tokenizer.ggml.scores"] = np.array(scores, dtype=np.float32)
    if merges is not None:
        meta["tokenizer.ggml.merges"] = merges
    meta.update({f"tokenizer.ggml.{k}": v for k, v in extra.items()})
    return meta


def byte_level_vocab(extra_tokens=(), merges=(), pre="gpt-2", types=None) -> Tokenizer:
    """All 256 byte tokens (GPT-2 spelling) plus `extra_tokens`."""
    tokens = list(BYTE_CHARS) + list(extra_tokens)
    types = [NORMAL] * 256 + list(types or [NORMAL] * len(extra_tokens))
    return Tokenizer.from_metadata(metadata("gpt2", tokens, types, merges=list(merges), pre=pre,
                                            eos_token_id=len(tokens) - 1))


def spm_vocab(pieces: dict[str, float], specials=(), add_space_prefix=True) -> Tokenizer:
    """<unk>, <s>, </s>, the 256 <0xNN> byte tokens, then `pieces` (text -> score) and control `specials`."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + list(pieces) + list(specials)
    types = [2, CONTROL, CONTROL] + [BYTE] * 256 + [NORMAL] * len(pieces) + [CONTROL] * len(specials)
    scores = [0.0] * 259 + list(pieces.values()) + [0.0] * len(specials)
    return Tokenizer.from_metadata(metadata("llama", tokens, types, scores, add_space_prefix=add_space_prefix))


# -- BPE -------------------------------------------------------------------------------------------------------


def test_bpe_merges_lowest_rank_first_leftmost_on_ties():
    tok = byte_level_vocab(["aa", "aaa", "ab"], merges=["a a", "aa a", "a b"])
    ids = {t: i for i, t in enumerate(tok.vocab.tokens)}
    # "aaab": (a,a) rank 0 at positions 0 and 1 -> leftmost first -> "aa","a","b" -> (aa,a) rank 1 -> "aaa","b"
    assert tok.encode("aaab", add_special=False) == [ids["aaa"], ids["b"]]
    assert tok.encode("aab", add_special=False) == [ids["aa"], ids["b"]]


def test_bpe_decode_maps_byte_characters_back():
    tok = byte_level_vocab()
    text = "héllo 😀\n\t"
    assert tok.decode(tok.encode(text, add_special=False)) == text


def test_unknown_or_missing_pre_tokenizer_warns_and_uses_default():
    with pytest.warns(UserWarning, match="unknown pre-tokenizer 'no-such-pre'"):
        tok = byte_level_vocab(pre="no-such-pre")
    assert tok.vocab.pre is PRE_TOKENIZERS["default"]
    with pytest.warns(UserWarning, match="no tokenizer.ggml.pre"):
        byte_level_vocab(pre="")


def test_known_pre_tokenizers_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for pre in ("qwen2", "smollm", "llama-bpe", "deepseek-coder", "deepseek-llm", "deepseek-v3"):
            byte_level_vocab(pre=pre)


@pytest.mark.parametrize("pre, text, words", [
    ("gpt-2", "Hello world's  3000 cats!!\n\n", ["Hello", " world", "'s", " ", " 3000", " cats", "!!", "\n\n"]),
    ("llama-bpe", "I'M 12345 ok\n\n  x", ["I", "'M", " ", "123", "45", " ok", "\n\n", " ", " x"]),
    ("qwen2", "abc 123  def", ["abc", " ", "1", "2", "3", " ", " def"]),
    ("smollm", "x12 y", ["x", "1", "2", " y"]),
    ("default", "don't 1234!", ["don", "'", "t", " ", "123", "4", "!"]),
])
def test_pre_tokenizer_splits(pre, text, words):
    assert split_words(text, PRE_TOKENIZERS[pre]) == words


def test_pre_tokenizer_unicode_classes():
    # é is a letter, ² a number, U+3000 whitespace, U+1FAE8 (Unicode 15) a symbol, as in llama.cpp's tables
    words = split_words("café ²x\u3000y 🫨z", PRE_TOKENIZERS["qwen2"])
    assert words == ["café", " ", "²", "x", "\u3000y", " 🫨", "z"]


def test_llama3_ignore_merges_takes_whole_word_tokens():
    tok = byte_level_vocab(["hello"], merges=[], pre="llama-bpe")
    assert tok.encode("hello", add_special=False) == [256]


# -- SPM -------------------------------------------------------------------------------------------------------


def test_spm_merges_highest_score_first_and_adds_space_prefix():
    tok = spm_vocab({"▁": -1.0, "a": -1.0, "b": -1.0, "▁a": -2.0, "ab": -0.5, "▁ab": -3.0})
    ids = {t: i for i, t in enumerate(tok.vocab.tokens)}
    # " ab" -> ▁ a b: "ab" (-0.5) beats "▁a" (-2.0); then "▁ab" exists
    assert tok.encode("ab", add_special=False) == [ids["▁ab"]]
    assert tok.encode("ab") == [tok.bos_id, ids["▁ab"]]


def test_spm_byte_fallback_for_unknown_characters():
    tok = spm_vocab({"▁": -1.0, "a": -1.0})
    ids = tok.encode("aé", add_special=False)
    assert [tok.token_text(i) for i in ids] == ["▁", "a", "<0xC3>", "<0xA9>"]
    assert tok.decode(ids) == "aé"  # the leading space SPM added is removed again


def test_spm_space_prefix_after_special_tokens():
    tok = spm_vocab({"▁": -1.0, "a": -1.0, "▁a": -0.5}, specials=["<x>"])
    ids = {t: i for i, t in enumerate(tok.vocab.tokens)}
    assert tok.encode("a<x>a", add_special=False, parse_special=True) == [ids["▁a"], ids["<x>"], ids["▁a"]]
    assert tok.encode("a<x>a", add_special=False) != [ids["▁a"], ids["<x>"], ids["▁a"]]


# -- special tokens --------------------------------------------------------------------------------------------


def test_special_tokens_are_cut_longest_first_not_leftmost_first():
    """llama.cpp cuts "DEFG" before "BCD" before "BC": in "ABCDEFG" that leaves "A", BC, DEFG."""
    tok = spm_vocab({c: -1.0 for c in "ABCDEFG▁"}, specials=["BC", "BCD", "DEFG"], add_space_prefix=False)
    ids = {t: i for i, t in enumerate(tok.vocab.tokens)}
    assert tok.encode("ABCDEFG", add_special=False, parse_special=True) == [ids["A"], ids["BC"], ids["DEFG"]]


def test_user_defined_tokens_are_cut_even_without_parse_special():
    tokens = list(BYTE_CHARS) + ["<tag>", "<|ctl|>"]
    tok = Tokenizer.from_metadata(metadata("gpt2", tokens, [NORMAL] * 256 + [USER_DEFINED, CONTROL], merges=[],
                                           pre="gpt-2"))
    assert tok.encode("a<tag>b<|ctl|>", add_special=False)[:3] == [tok.vocab.token_to_id["a"], 256,
                                                                     tok.vocab.token_to_id["b"]]
    assert 257 not in tok.encode("<|ctl|>", add_special=False)
    assert tok.encode("<|ctl|>", add_special=False, parse_special=True) == [257]


# -- decoding --------------------------------------------------------------------------------------------------


def _llama_clean_spaces(text: bytes) -> bytes:
    """llama.cpp's three in-place clean-up loops, transcribed literally (test oracle for the regex version)."""
    t = bytearray(text)
    total = len(t)
    # pass 1: " ?", " !", " .", " ,"
    n, total = total, 1 if total else 0
    for i in range(1, n):
        x = t[i]
        if t[i - 1] == 0x20 and x in b"?!.,":
            total -= 1
        t[total] = x
        total += 1
    # pass 2: " ' " -> "'"
    n, total, i = total, 1 if total else 0, 1
    while i < n:
        x = t[i]
        if x == 0x27 and i + 1 < n and t[i - 1] == 0x20 and t[i + 1] == 0x20:
            total -= 1
            i += 1
            t[i] = 0
        t[total] = x
        total += 1
        i += 1
    # pass 3: " 's", " 'm", " 're", " 've"
    n, total = total, 1 if total else 0
    for i in range(1, n):
        x = t[i]
        if t[i - 1] == 0x20 and x == 0x27 and i + 1 < n:
            x1 = t[i + 1]
            if x1 in b"sm" or (i + 2 < n and bytes(t[i + 1:i + 3]) in (b"re", b"ve")):
                total -= 1
        t[total] = x
        total += 1
    return bytes(t[:total])


_CLEANUP_ALPHABET = " '?!.,smrvetdlx"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_CLEANUP_ALPHABET), max_size=24))
def test_space_cleanup_matches_llama_cpp_and_streams(chars):
    tok = byte_level_vocab()  # pre "gpt-2": llama.cpp cleans up spaces when decoding
    assert tok.vocab.clean_spaces
    ids = [tok.vocab.token_to_id[byte_encode(c)] for c in chars]
    whole = tok.decode(ids)
    assert whole.encode() == _llama_clean_spaces("".join(chars).encode())
    decoder = StreamDecoder(tok)
    assert "".join(decoder.push(i) for i in ids) + decoder.flush() == whole


def test_stream_decoder_holds_partial_utf8_until_complete():
    tok = byte_level_vocab()
    ids = [tok.vocab.token_to_id[BYTE_CHARS[b]] for b in "é😀".encode()]
    decoder = StreamDecoder(tok)
    assert [decoder.push(i) for i in ids] == ["", "é", "", "", "", "😀"]
    assert decoder.flush() == ""
    decoder = StreamDecoder(tok)
    assert decoder.push(ids[0]) == "" and decoder.flush() == "\ufffd"


def test_skip_special_hides_control_but_shows_user_defined():
    tokens = list(BYTE_CHARS) + ["<tag>", "<|ctl|>"]
    tok = Tokenizer.from_metadata(metadata("gpt2", tokens, [NORMAL] * 256 + [USER_DEFINED, CONTROL], merges=[],
                                           pre="qwen2"))
    assert tok.decode([256, 257]) == "<tag><|ctl|>"
    assert tok.decode([256, 257], skip_special=True) == "<tag>"


def test_all_token_bytes_equals_token_bytes_of_each_id():
    # the bulk path a grammar vocabulary is built from, over every token kind (0 undefined, 2 unknown, 5 unused)
    bpe = byte_level_vocab(["Ġhi", "<tag>", "<|ctl|>", "x", "y", "z"], types=[NORMAL, USER_DEFINED, CONTROL, 0, 2, 5])
    spm = spm_vocab({"▁hi": -1.0, "▁a▁b": -2.0}, specials=["<ctl>"])
    for tok in (bpe, spm):
        assert tok.all_token_bytes() == [tok.token_bytes(i) for i in range(tok.n_vocab)]
    assert bpe.all_token_bytes()[256:259] == [b" hi", b"<tag>", b"<|ctl|>"]
    assert spm.all_token_bytes()[-3:] == [b" hi", b" a b", b"<ctl>"]


def test_unsupported_model_is_an_error():
    with pytest.raises(TokenizerError, match="unsupported tokenizer model 'bert'"):
        Tokenizer.from_metadata(metadata("bert", ["[PAD]"]))
