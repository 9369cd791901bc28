"""Tokenizers built from GGUF metadata, token-for-token identical to llama.cpp (BPE and SentencePiece)."""

from .tokenizer import StreamDecoder, Tokenizer
from .vocab import TokenizerError

__all__ = ["StreamDecoder", "Tokenizer", "TokenizerError"]
