"""The public tokenizer: text <-> token ids for a GGUF model's vocabulary, matching llama.cpp."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .bpe import BpeEncoder
from .detokenize import ByteStream, Pieces
from .special import Fragment, SpecialSplitter
from .spm import SPACE, SpmEncoder
from .vocab import Attr, TokenizerError, Vocab, load_vocab

_SPECIAL = Attr.CONTROL | Attr.USER_DEFINED | Attr.UNKNOWN


class Tokenizer:
    """Encode and decode like llama.cpp's llama_tokenize / llama_detokenize for SPM ("llama") and byte-level
    BPE ("gpt2") vocabularies."""

    def __init__(self, vocab: Vocab):
        self.vocab = vocab
        self._encoder = BpeEncoder(vocab) if vocab.model == "gpt2" else SpmEncoder(vocab)
        self._pieces = Pieces(vocab)
        always = [i for i in vocab.special_ids if not vocab.attrs[i] & (Attr.CONTROL | Attr.UNKNOWN)]
        # parse_special=False still cuts out user-defined tokens, as llama.cpp (and HF tokenizers) do.
        self._splitters = {False: SpecialSplitter(vocab, always),
                           True: SpecialSplitter(vocab, list(vocab.special_ids))}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> Tokenizer:
        """Build from GGUF metadata (`tokenizer.ggml.*` keys; `general.name`/`general.architecture` optional)."""
        return cls(load_vocab(metadata))

    # -- encoding --------------------------------------------------------------------------------------------

    def encode(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids for `text`. `add_special` adds BOS/EOS as the model's add_bos/add_eos flags say;
        `parse_special` turns control-token texts such as "<|im_end|>" into their ids instead of plain text."""
        vocab = self.vocab
        fragments = self._splitters[parse_special].split(text) if text else []
        out: list[int] = []
        if add_special and vocab.add_bos:
            out.append(self._required(vocab.bos_id, "BOS"))
        if vocab.model == "gpt2":
            for fragment in fragments:
                if isinstance(fragment, str):
                    self._encoder.encode(fragment, out)
                else:
                    out.append(fragment)
        else:
            self._encode_spm(fragments, out)
        if add_special and vocab.add_eos:
            out.append(self._required(vocab.eos_id, "EOS"))
        return out

    def _encode_spm(self, fragments: list[Fragment], out: list[int]) -> None:
        after_special = True  # llama.cpp prefixes a space at the start and after every special token
        for fragment in fragments:
            if isinstance(fragment, str):
                if self.vocab.add_space_prefix and after_special:
                    fragment = " " + fragment
                self._encoder.encode(fragment.replace(" ", SPACE), out)
                after_special = False
            else:
                out.append(fragment)
                after_special = True

    @staticmethod
    def _required(token_id: int | None, name: str) -> int:
        if token_id is None:
            raise TokenizerError(f"the model asks for a {name} token but has none")
        return token_id

    # -- decoding --------------------------------------------------------------------------------------------

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """Text for `ids` (llama_detokenize). `skip_special` hides control/unknown tokens; user-defined tokens
        are always shown, as in llama.cpp."""
        stream = ByteStream(self.vocab, self._pieces, skip_special)
        return "".join([stream.push(int(i)) for i in ids]) + stream.flush()

    def token_bytes(self, token_id: int, skip_special: bool = False) -> bytes:
        """The bytes token `token_id` stands for (llama_token_to_piece); b"" for control/unknown tokens when
        `skip_special`."""
        return self._pieces.get(int(token_id), skip_special)

    def all_token_bytes(self) -> list[bytes]:
        """token_bytes(i) for every id, in order, in one pass (for building a grammar engine's vocabulary)."""
        return self._pieces.all()

    def token_text(self, token_id: int) -> str:
        """The token as written in the vocabulary (e.g. "Ġthe", "▁the", "<0x0A>", "<|im_end|>")."""
        return self.vocab.tokens[token_id]

    def is_special(self, token_id: int) -> bool:
        """True for control, user-defined and unknown tokens: the ones cut out of text as a unit."""
        return bool(self.vocab.attrs[token_id] & _SPECIAL)

    # -- vocabulary facts ------------------------------------------------------------------------------------

    @property
    def n_vocab(self) -> int:
        return self.vocab.n_vocab

    @property
    def bos_id(self) -> int | None:
        return self.vocab.bos_id

    @property
    def eos_id(self) -> int | None:
        return self.vocab.eos_id

    @property
    def eot_id(self) -> int | None:
        return self.vocab.eot_id

    @property
    def eog_ids(self) -> frozenset[int]:
        """Ids that end generation (EOS, EOT and tokens such as <|im_end|> or <end_of_turn>)."""
        return self.vocab.eog_ids

    @property
    def add_bos(self) -> bool:
        return self.vocab.add_bos

    @property
    def add_eos(self) -> bool:
        return self.vocab.add_eos

    @property
    def model(self) -> str:
        """"gpt2" (byte-level BPE) or "llama" (SentencePiece BPE)."""
        return self.vocab.model

    @property
    def pre(self) -> str:
        """The `tokenizer.ggml.pre` value ("" when absent)."""
        return self.vocab.pre_name


class StreamDecoder:
    """Decodes ids one at a time; the concatenated output always equals `tok.decode(all_ids)`."""

    def __init__(self, tok: Tokenizer, skip_special: bool = False):
        self._stream = ByteStream(tok.vocab, tok._pieces, skip_special)

    def push(self, token_id: int) -> str:
        """The text completed by this token (possibly ""; never half a UTF-8 character)."""
        return self._stream.push(int(token_id))

    def flush(self) -> str:
        """Whatever is still held back (incomplete characters become U+FFFD)."""
        return self._stream.flush()
