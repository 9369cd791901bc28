"""Constrained decoding with llguidance: our vocabulary in its terms, requests compiled to its grammars, and the
per-sequence `GrammarConstraint` the engine masks logits with.

Why llguidance (scripts/bench_grammar_engines.py measures it against xgrammar and outlines-core): it compiles a
nested JSON schema in ~5 ms where outlines-core takes 2-17 s (it builds the whole automaton over the vocabulary
up front), it needs no PyTorch (xgrammar imports torch at load: gigabytes on a laptop for a CPU runtime), it
reads llama.cpp's GBNF, and its mask costs 15-300 us a token, against a decode step of 5-100 ms here. It is also
what llama.cpp and vLLM use, so the schema features it refuses are the ones users already meet there.

Its tokenizer is built once per vocabulary and cached while the Tokenizer (so the LLM) lives: from each token's
bytes as llama.cpp's token_to_piece gives them (one bulk pass, Tokenizer.all_token_bytes), control tokens marked
with a leading 0xFF byte (how llguidance, and llama.cpp's integration, tell special tokens from text), and every
end-of-generation token as an EOS the grammar may end on. On a quiet machine that takes 0.15 s for 49k tokens,
0.45 s for 152k and 0.9 s for Gemma-3's 262k, nearly all of it inside llguidance: its token trie, and the mask
"slices" that make a 262k-token mask inside a JSON string about 5x cheaper (they cost half the build).
"""

from __future__ import annotations

import json
import re
import threading
import weakref
from typing import TYPE_CHECKING

import numpy as np

from ..errors import StructuredOutputError
from ..tokenizer.vocab import Attr
from .params import StructuredOutputsParams

if TYPE_CHECKING:
    import llguidance

    from ..tokenizer import Tokenizer

_NEG_INF = np.float32(-np.inf)
_SPECIAL_PREFIX = b"\xff"
_ANY_JSON_OBJECT = {"type": "object"}
# Whitespace JSON may use between tokens unless a request says otherwise: llama.cpp's json-schema-to-grammar
# `space` rule (one space, or a newline and up to 20 indent characters). llguidance's own default is any amount,
# and a small model sampled at temperature 1 can then spend its whole budget on blank lines.
LLAMA_CPP_JSON_SPACE = r"(?: |\n[ \t]{0,20})?"

_vocabularies: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_vocabularies_lock = threading.Lock()


def _engine():
    try:
        import llguidance
    except ImportError:  # a dependency, but say what to do if an install lost it
        raise StructuredOutputError("structured output needs the llguidance package (pip install llguidance)") \
            from None
    return llguidance


class _VocabularySource:
    """What llguidance's TokenizerWrapper reads: token bytes, special ids, EOS/BOS, and a tokenize callback
    (llguidance uses it to tokenize forced text canonically)."""

    def __init__(self, tokenizer: Tokenizer):
        tokens = tokenizer.all_token_bytes()
        self.special_token_ids = _special_ids(tokenizer)
        for i in self.special_token_ids:
            tokens[i] = _SPECIAL_PREFIX + tokens[i]
        self.tokens = tokens
        self.eos_token_id = tokenizer.eos_id if tokenizer.eos_id is not None else min(tokenizer.eog_ids, default=0)
        self.bos_token_id = tokenizer.bos_id
        self._tokenizer = tokenizer

    def __call__(self, text: bytes) -> list[int]:  # llguidance hands over UTF-8 bytes
        return self._tokenizer.encode(text.decode("utf-8", "replace"), add_special=False)


def _special_ids(tokenizer: Tokenizer) -> list[int]:
    """llama.cpp's rule for its llguidance vocabulary: control tokens, and user-defined ones spelled <...>."""
    attrs = np.asarray(tokenizer.vocab.attrs)
    texts = tokenizer.vocab.tokens
    user = [i for i in np.flatnonzero(attrs & Attr.USER_DEFINED).tolist()
            if texts[i].startswith("<") and texts[i].endswith(">")]
    return sorted(set(np.flatnonzero(attrs & Attr.CONTROL).tolist()).union(user))


def grammar_vocabulary(tokenizer: Tokenizer) -> llguidance.LLTokenizer:
    """llguidance's tokenizer for this vocabulary, built on first use and kept while `tokenizer` lives."""
    with _vocabularies_lock:
        cached = _vocabularies.get(tokenizer)
        if cached is None:
            llg = _engine()
            eos = sorted(tokenizer.eog_ids) or None
            cached = llg.LLTokenizer(llg.TokenizerWrapper(_VocabularySource(tokenizer)), eos_token=eos)
            _vocabularies[tokenizer] = cached
        return cached


def grammar_text(params: StructuredOutputsParams) -> str:
    """The llguidance grammar (its JSON form) for a request; StructuredOutputError for malformed input that
    llguidance's own constructors refuse (GBNF that does not parse, a schema that is not JSON)."""
    llg = _engine()
    kind = params.kind
    if kind in ("json", "json_object"):
        schema = params.json if kind == "json" else _ANY_JSON_OBJECT
        options: dict = {"whitespace_flexible": not params.disable_any_whitespace}
        if not params.disable_any_whitespace:
            options["whitespace_pattern"] = params.whitespace_pattern or LLAMA_CPP_JSON_SPACE
        if params.disable_additional_properties:
            schema = _close_objects(schema)
        try:
            return llg.LLMatcher.grammar_from_json_schema(json.dumps(schema), overrides=options)
        except ValueError as e:
            raise StructuredOutputError(f"invalid JSON schema: {_one_line(str(e))}") from None
    if kind == "regex":
        return llg.LLMatcher.grammar_from_regex(params.regex)
    if kind == "choice":
        return llg.LLMatcher.grammar_from_lark("start: " + " | ".join(json.dumps(c) for c in params.choice))
    try:
        return llg.grammar_from("grammar", params.grammar)
    except ValueError as e:
        raise StructuredOutputError(f"invalid grammar: {_one_line(str(e))}") from None


def _close_objects(schema):
    """`schema` with ``additionalProperties: false`` wherever an object schema leaves it unsaid (vLLM's
    disable_additional_properties)."""
    if isinstance(schema, list):
        return [_close_objects(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _close_objects(v) for k, v in schema.items()}
    if (out.get("type") == "object" or "properties" in out) and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


_WHAT = {"json": "JSON schema", "json_object": "JSON schema", "regex": "regex", "choice": "choice",
         "grammar": "grammar"}


class CompiledGrammar:
    """A request's grammar, checked against the vocabulary; `constraint()` starts a sequence on it."""

    def __init__(self, params: StructuredOutputsParams, tokenizer: Tokenizer):
        llg = _engine()
        self.vocabulary = grammar_vocabulary(tokenizer)
        self.text = grammar_text(params)
        failed, messages = llg.LLMatcher.validate_grammar_with_warnings(self.text, self.vocabulary)
        if failed:
            raise StructuredOutputError(f"invalid {_WHAT[params.kind]}: {_one_line(messages[0])}")
        self.warnings = [_one_line(m) for m in messages]
        self.n_vocab = tokenizer.n_vocab

    def constraint(self) -> GrammarConstraint:
        matcher = _engine().LLMatcher(self.vocabulary, self.text, log_level=0)
        if matcher.is_error():  # validated above: only a resource limit gets here
            raise StructuredOutputError(f"the grammar cannot be used: {_one_line(matcher.get_error())}")
        return GrammarConstraint(matcher, self.n_vocab)


class GrammarConstraint:
    """One sequence's position in its grammar (the engine's Constraint protocol).

    mask() leaves only tokens the grammar allows next (an end-of-generation token once the grammar may end);
    accept() advances past the sampled token. A matcher that fails (it should not: only allowed tokens are
    sampled) allows nothing but end-of-generation from then on, so the sequence ends instead of the step loop
    raising for every sequence in the batch; `error` says what happened.
    """

    def __init__(self, matcher, n_vocab: int):
        self._matcher = matcher
        self._n_vocab = n_vocab
        self._bits = np.zeros((n_vocab + 31) // 32, dtype=np.int32)  # one bit per token, llguidance's layout
        self.error: str | None = None

    def mask(self, logits: np.ndarray) -> None:
        """In place: logits of disallowed tokens become -inf (rows past the vocabulary too)."""
        self._matcher.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
        allowed = np.unpackbits(self._bits.view(np.uint8), count=self._n_vocab, bitorder="little").view(np.bool_)
        np.copyto(logits[: self._n_vocab], _NEG_INF, where=~allowed)
        logits[self._n_vocab:] = _NEG_INF
        if self._matcher.is_error() and self.error is None:
            self.error = self._matcher.get_error()

    def accept(self, token_id: int) -> None:
        if not self._matcher.consume_token(int(token_id)) and self.error is None:
            self.error = self._matcher.get_error() or f"token {token_id} refused"

    def is_terminated(self) -> bool:
        """True once the grammar is complete and admits nothing more (the sequence finishes with "stop")."""
        return self._matcher.is_stopped()

    def is_accepting(self) -> bool:
        """True when the text so far is a complete match (it may still go on, e.g. a longer number)."""
        return self._matcher.is_accepting()

    def fork(self) -> GrammarConstraint:
        twin = GrammarConstraint(self._matcher.deep_copy(), self._n_vocab)
        twin.error = self.error
        return twin

    def valid_prefix(self, token_ids: list[int]) -> int:
        """How many leading tokens of a draft the grammar allows from here (the state does not change)."""
        return self._matcher.validate_tokens([int(t) for t in token_ids]) if token_ids else 0

    def rollback(self, n_tokens: int) -> None:
        """Undo the last n accepted tokens."""
        if n_tokens:
            self._matcher.rollback(n_tokens)


def compile_grammar(params: StructuredOutputsParams, tokenizer: Tokenizer) -> CompiledGrammar:
    """Compile and check a request's constraint (StructuredOutputError names what is wrong or unsupported)."""
    return CompiledGrammar(params, tokenizer)


_CARET_LINE = re.compile(r"^\s*(\d+ \|.*|[\s^~]*)$")


def _one_line(message: str) -> str:
    """llguidance's multi-line messages (source excerpts, caret markers) as one line of their words."""
    lines = [line.strip() for line in message.splitlines() if not _CARET_LINE.match(line)]
    return " ".join(" ".join(lines).split())
