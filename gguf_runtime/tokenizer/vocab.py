"""The vocabulary as llama.cpp sees it: tokens, scores, per-token attributes, special ids and flags, all read
from `tokenizer.ggml.*` metadata, including llama.cpp's text-based fix-ups (EOT/EOG/FIM detection, "unused"
control tokens) that are not in the file itself."""

from __future__ import annotations

import re
import warnings
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import TokenizerError  # noqa: F401  (re-exported: its old home)

from ..metadata import get_bool, get_int, get_num_array, get_str, get_str_array
from .pretokenize import PreTokenizer, pre_tokenizer_for

KEY = "tokenizer.ggml."
MAX_TOKENS = 1 << 24  # llama_token is int32; no released vocabulary comes near
_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")




class Attr:
    """llama_token_attr bits (plain ints: enum.IntFlag arithmetic is too slow for 262k tokens)."""

    UNDEFINED = 0
    UNKNOWN = 1 << 0
    UNUSED = 1 << 1
    NORMAL = 1 << 2
    CONTROL = 1 << 3
    USER_DEFINED = 1 << 4
    BYTE = 1 << 5
    NORMALIZED = 1 << 6
    LSTRIP = 1 << 7
    RSTRIP = 1 << 8
    SINGLE_WORD = 1 << 9


# GGUF token_type value -> attribute (index = type; 0 and anything unknown mean UNDEFINED).
_TYPE_TO_ATTR = np.array([Attr.UNDEFINED, Attr.NORMAL, Attr.UNKNOWN, Attr.CONTROL, Attr.USER_DEFINED,
                          Attr.UNUSED, Attr.BYTE], dtype=np.int32)

# Texts llama.cpp recognises as special tokens when the file has no id for them, in llama.cpp's order.
# (llama.cpp takes the first match in hash-map order; we take the first in list order.)
_EOT_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>",
              "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>")
_EOM_TEXTS = ("<|eom_id|>",)
_FIM_PRE_TEXTS = ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
                  "<|code_prefix|>", "<|prefix|>")
_FIM_SUF_TEXTS = ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>",
                  "<|code_suffix|>", "<|suffix|>")
_FIM_MID_TEXTS = ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>",
                  "<|code_middle|>", "<|middle|>")
_FIM_PAD_TEXTS = ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]")
_FIM_REP_TEXTS = ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>")
_FIM_SEP_TEXTS = ("<|file_sep|>",)
# Tokens that end generation whatever the file says.
_EOG_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
              "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
              "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
              "<｜end▁of▁sentence｜>", "[e~[")
# gpt-oss: always rendered, so llama.cpp makes them user-defined.
_ALWAYS_RENDERED = ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>")

# (metadata key, field) in llama.cpp's reading order; the deprecated FIM keys override the new ones.
_SPECIAL_ID_KEYS = (
    ("bos_token_id", "bos_id"), ("eos_token_id", "eos_id"), ("eot_token_id", "eot_id"),
    ("eom_token_id", "eom_id"), ("unknown_token_id", "unk_id"), ("seperator_token_id", "sep_id"),
    ("padding_token_id", "pad_id"), ("mask_token_id", "mask_id"), ("fim_pre_token_id", "fim_pre_id"),
    ("fim_suf_token_id", "fim_suf_id"), ("fim_mid_token_id", "fim_mid_id"), ("fim_pad_token_id", "fim_pad_id"),
    ("fim_rep_token_id", "fim_rep_id"), ("fim_sep_token_id", "fim_sep_id"), ("prefix_token_id", "fim_pre_id"),
    ("suffix_token_id", "fim_suf_id"), ("middle_token_id", "fim_mid_id"),
)


@dataclass
class Vocab:
    model: str  # "gpt2" (byte-level BPE) or "llama" (SentencePiece BPE)
    pre_name: str
    tokens: list[str]
    token_to_id: dict[str, int]
    scores: Sequence[float]  # array('f'): 4 bytes a token, where a list of floats takes 32 (8 MB for Gemma's 262k)
    attrs: list[int]
    merges: list[str]
    pre: PreTokenizer | None = None  # BPE only
    add_bos: bool = False
    add_eos: bool = False
    add_space_prefix: bool = False
    clean_spaces: bool = False
    ignore_merges: bool = False
    bos_id: int | None = None
    eos_id: int | None = None
    eot_id: int | None = None
    eom_id: int | None = None
    unk_id: int | None = None
    sep_id: int | None = None
    pad_id: int | None = None
    mask_id: int | None = None
    fim_pre_id: int | None = None
    fim_suf_id: int | None = None
    fim_mid_id: int | None = None
    fim_pad_id: int | None = None
    fim_rep_id: int | None = None
    fim_sep_id: int | None = None
    eog_ids: frozenset[int] = frozenset()
    special_ids: tuple[int, ...] = ()  # control/user-defined/unknown tokens, longest text first

    @property
    def n_vocab(self) -> int:
        return len(self.tokens)


def load_vocab(metadata: Mapping[str, Any]) -> Vocab:
    """Build the vocabulary from GGUF metadata, as llama_vocab::impl::load does for SPM and BPE models.

    Every key is type-checked (MetadataError names it); the per-token arrays must have one entry per token,
    token types must be llama.cpp's 0..6, and a BYTE token must be written <0xNN>."""
    model = get_str(metadata, KEY + "model", None)
    if model not in ("gpt2", "llama"):
        raise TokenizerError(f"unsupported tokenizer model {model!r} (supported: 'gpt2' BPE, 'llama' SPM)")
    tokens = get_str_array(metadata, KEY + "tokens", [])
    if not tokens:
        raise TokenizerError("metadata has no tokenizer.ggml.tokens")
    if len(tokens) > MAX_TOKENS:
        raise TokenizerError(f"tokenizer.ggml.tokens has {len(tokens)} entries, more than {MAX_TOKENS}")
    if "" in tokens:  # llama.cpp renames empty tokens
        tokens = [t if t else f"[EMPTY_{i}]" for i, t in enumerate(tokens)]
    n = len(tokens)

    scores = get_num_array(metadata, KEY + "scores", n, None)
    types = get_num_array(metadata, KEY + "token_type", n, None, integer=True)
    if types is not None:
        attrs = _attrs_of_types(types, tokens)
    else:
        attrs = np.full(n, Attr.NORMAL, dtype=np.int32)

    pre_name = get_str(metadata, KEY + "pre", "")
    vocab = Vocab(model=model, pre_name=pre_name, tokens=tokens, token_to_id=dict(zip(tokens, range(n))),
                  scores=_float32_array(scores, n), attrs=[],
                  merges=[])
    if model == "gpt2":
        merges = get_str_array(metadata, KEY + "merges", None)
        if merges is None:
            raise TokenizerError("BPE tokenizer without tokenizer.ggml.merges")
        vocab.merges = merges
        vocab.pre = pre_tokenizer_for(pre_name)
        vocab.bos_id = vocab.eos_id = 11
        vocab.clean_spaces = vocab.pre.clean_spaces
        vocab.ignore_merges = vocab.pre.ignore_merges
        vocab.add_bos = vocab.pre.add_bos
    else:
        vocab.bos_id, vocab.eos_id, vocab.unk_id = 1, 2, 0
        vocab.add_space_prefix = True
        vocab.add_bos = True
    vocab.add_space_prefix = get_bool(metadata, KEY + "add_space_prefix", vocab.add_space_prefix)

    _read_special_ids(vocab, metadata)
    vocab.add_bos = get_bool(metadata, KEY + "add_bos_token", vocab.add_bos)
    vocab.add_eos = get_bool(metadata, KEY + "add_eos_token", vocab.add_eos)
    _detect_special_tokens(vocab, attrs)
    vocab.special_ids = _special_tokens_longest_first(vocab, attrs)
    vocab.attrs = attrs.tolist()
    _apply_model_name_rules(vocab, get_str(metadata, "general.name", "").lower(), pre_name,
                            get_str(metadata, "general.architecture", ""))
    return vocab


def _float32_array(values: np.ndarray | None, n: int) -> array:
    """The per-token scores as an array('f'): each read gives the same Python float as a list of the float32
    values would, at an eighth of the memory."""
    if values is None:
        return array("f", bytes(4 * n))
    return array("f", np.ascontiguousarray(values, dtype=np.float32).tobytes())


def _attrs_of_types(types: np.ndarray, tokens: list[str]) -> np.ndarray:
    """Token attributes from GGUF token types, refusing types llama.cpp does not define and BYTE tokens
    whose text is not <0xNN> (llama.cpp parses the two hex digits; other text has no byte value)."""
    bad = np.flatnonzero((types < 0) | (types >= len(_TYPE_TO_ATTR)))
    if bad.size:
        i = int(bad[0])
        raise TokenizerError(f"tokenizer.ggml.token_type[{i}] is {int(types[i])}, not a token type "
                             f"(0..{len(_TYPE_TO_ATTR) - 1})")
    attrs = _TYPE_TO_ATTR[types]
    for i in np.flatnonzero(attrs == Attr.BYTE).tolist():
        if not _BYTE_TOKEN.fullmatch(tokens[i]):
            raise TokenizerError(f"token {i} {tokens[i][:20]!r} has type BYTE but is not written <0xNN>")
    return attrs


def _read_special_ids(vocab: Vocab, metadata: Mapping[str, Any]) -> None:
    """Special ids from the file; an id outside the vocabulary is ignored with a warning, as llama.cpp does."""
    n = vocab.n_vocab
    for key, attr_name in _SPECIAL_ID_KEYS:
        current = getattr(vocab, attr_name)
        if current is not None and current >= n:  # a default outside this vocabulary is disabled
            setattr(vocab, attr_name, None)
        new = get_int(metadata, KEY + key, None, lo=-(2**63), hi=2**64 - 1)
        if new is None:
            continue
        if 0 <= new < n:
            setattr(vocab, attr_name, new)
        else:
            warnings.warn(f"{KEY}{key} = {new} is outside the vocabulary of {n} tokens; ignored", stacklevel=4)


def _detect_special_tokens(vocab: Vocab, attrs: np.ndarray) -> None:
    """llama.cpp's text-based detection of EOT/EOM/FIM/EOG tokens and unused control tokens (edits `attrs`)."""
    ids = vocab.token_to_id

    def force_control(token_id: int) -> None:
        attrs[token_id] |= Attr.CONTROL

    for attr_name, texts in (("eot_id", _EOT_TEXTS), ("eom_id", _EOM_TEXTS), ("fim_pre_id", _FIM_PRE_TEXTS),
                             ("fim_suf_id", _FIM_SUF_TEXTS), ("fim_mid_id", _FIM_MID_TEXTS),
                             ("fim_pad_id", _FIM_PAD_TEXTS), ("fim_rep_id", _FIM_REP_TEXTS),
                             ("fim_sep_id", _FIM_SEP_TEXTS)):
        if getattr(vocab, attr_name) is not None:
            continue
        found = next((ids[t] for t in texts if t in ids), None)
        if found is not None:
            setattr(vocab, attr_name, found)
            force_control(found)

    for token_id in np.flatnonzero(attrs & Attr.CONTROL).tolist():
        if "unused" in vocab.tokens[token_id]:
            attrs[token_id] |= Attr.UNUSED

    eog = {i for i in (vocab.fim_pad_id, vocab.fim_rep_id, vocab.fim_sep_id) if i is not None}
    for text in _EOG_TEXTS:
        if text in ids:
            eog.add(ids[text])
            force_control(ids[text])
    for text in _ALWAYS_RENDERED:
        if text in ids:
            attrs[ids[text]] = Attr.USER_DEFINED
    eog.update(i for i in (vocab.eos_id, vocab.eot_id, vocab.eom_id) if i is not None)

    # o200k_harmony / solar-open: "<|end|>" ends a message, not generation.
    eog_texts = {vocab.tokens[i]: i for i in eog}
    if "<|end|>" in eog_texts and ("<|call|>" in eog_texts or "<|calls|>" in eog_texts) and (
            "<|return|>" in eog_texts or "<|flush|>" in eog_texts):
        end_id = eog_texts["<|end|>"]
        eog.discard(end_id)
        attrs[end_id] = Attr.USER_DEFINED
    # gemma4 / plamo: "</s>" is an ordinary token there.
    if "</s>" in eog_texts and ("<|tool_response>" in eog_texts or "<|plamo:eos|>" in eog_texts):
        s_id = eog_texts["</s>"]
        eog.discard(s_id)
        attrs[s_id] = Attr.NORMAL
    vocab.eog_ids = frozenset(eog)


def _special_tokens_longest_first(vocab: Vocab, attrs: np.ndarray) -> tuple[int, ...]:
    special = np.flatnonzero(attrs & (Attr.CONTROL | Attr.USER_DEFINED | Attr.UNKNOWN)).tolist()
    # llama.cpp uses an unstable sort; ties (same length) keep id order here.
    return tuple(sorted(special, key=lambda i: -len(vocab.tokens[i].encode())))


def _apply_model_name_rules(vocab: Vocab, model_name: str, pre_name: str, arch: str) -> None:
    """Per-model lstrip/rstrip attributes llama.cpp sets by name (they are not in GGUF files)."""
    ids, attrs = vocab.token_to_id, vocab.attrs
    if any(s in pre_name for s in ("jina-v2-de", "jina-v2-es", "jina-v2-code")) or any(
            s in arch for s in ("nomic-bert-moe", "jina-bert-v3")):
        if "<mask>" in ids:
            attrs[ids["<mask>"]] |= Attr.LSTRIP
    elif "phi-3" in model_name or "phi3" in model_name:
        for token_id in vocab.special_ids:
            attrs[token_id] |= Attr.RSTRIP
        for text, on in (("</s>", True), ("<unk>", False), ("<s>", False), ("<|endoftext|>", False)):
            if text in ids:
                attrs[ids[text]] = attrs[ids[text]] | Attr.RSTRIP if on else attrs[ids[text]] & ~Attr.RSTRIP
    elif "modern-bert" in model_name and "[MASK]" in ids:
        attrs[ids["[MASK]"]] |= Attr.LSTRIP
