"""Model hyperparameters, read once from GGUF metadata into one frozen dataclass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .metadata import MISSING, get_float, get_int, get_str

# How each architecture lays out RoPE pairs in its GGUF weights. llama.cpp's converter permutes llama's Q/K
# rows so adjacent dims (2i, 2i+1) rotate together ("normal"); qwen2 keeps HF's halves (i, i + n_rot/2), "neox".
ROPE_STYLE = {"llama": "normal", "qwen2": "neox"}
SUPPORTED_ARCHITECTURES = tuple(ROPE_STYLE)

# Bounds on hyperparameters, so no size computed from them can overflow or ask for absurd memory before the
# tensor shapes (which must then match them) are checked. LLAMA_MAX_LAYERS is 512; the rest are generous
# over any released model (Llama 3.1 405B: n_embd 16384, n_ff 53248, 128 heads; Gemma: head size 256).
MAX_LAYERS = 512
MAX_HEADS = 1024
MAX_HEAD_DIM = 1024
MAX_SIZE = 1 << 20  # embedding and feed-forward widths
MAX_VOCAB = 1 << 24
MAX_CONTEXT = 1 << 24


class ConfigError(ValueError):
    """The model's metadata describes something we cannot run."""


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    n_layers: int
    n_embd: int
    n_ff: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    n_rot: int  # rotated dims per head (may be < head_dim)
    rope_style: str  # "normal" | "neox"
    rope_base: float
    rope_freq_scale: float  # linear scaling: positions are multiplied by this (1 / scaling.factor)
    rms_eps: float
    n_ctx_train: int
    n_vocab: int

    @property
    def n_group(self) -> int:
        """Query heads that share one key/value head (grouped-query attention)."""
        return self.n_heads // self.n_kv_heads

    @classmethod
    def from_metadata(cls, md: Mapping[str, Any], n_vocab: int) -> "ModelConfig":
        """Read and sanity-check the hyperparameters (as llama_model::load_hparams does) before anything is
        allocated from them. `n_vocab`: the tokenizer's vocabulary size, which the embedding rows must match."""
        arch = get_str(md, "general.architecture")
        if arch not in ROPE_STYLE:
            raise ConfigError(f"unsupported architecture {arch!r}; supported: {', '.join(SUPPORTED_ARCHITECTURES)}")

        def count(name: str, default: Any = MISSING, lo: int = 1, hi: int = MAX_SIZE) -> int:
            return get_int(md, f"{arch}.{name}", default, lo=lo, hi=hi)

        def real(name: str, default: float, **bounds) -> float:
            return get_float(md, f"{arch}.{name}", default, **bounds)

        n_layers = count("block_count", hi=MAX_LAYERS)
        n_embd = count("embedding_length")
        n_ff = count("feed_forward_length")
        n_heads = count("attention.head_count", hi=MAX_HEADS)
        n_kv_heads = count("attention.head_count_kv", n_heads, hi=MAX_HEADS)
        if n_heads % n_kv_heads:
            raise ConfigError(f"head counts {n_heads}/{n_kv_heads} are not a valid grouped-query layout "
                              f"({arch}.attention.head_count must be a multiple of head_count_kv)")
        if f"{arch}.attention.key_length" not in md and n_embd % n_heads:
            raise ConfigError(f"{arch}.embedding_length {n_embd} is not divisible by head_count {n_heads}")
        head_dim = count("attention.key_length", n_embd // n_heads, hi=MAX_HEAD_DIM)
        value_dim = count("attention.value_length", head_dim, hi=MAX_HEAD_DIM)
        if value_dim != head_dim:
            raise ConfigError(f"{arch}.attention.value_length {value_dim} differs from key_length {head_dim}; "
                              "only equal key and value head sizes are supported")
        n_rot = count("rope.dimension_count", head_dim, hi=MAX_HEAD_DIM)
        if n_rot > head_dim or n_rot % 2:
            raise ConfigError(f"{arch}.rope.dimension_count {n_rot} does not fit head size {head_dim} "
                              "(it must be even and at most the head size)")

        scaling = get_str(md, f"{arch}.rope.scaling.type", "none")
        factor = real("rope.scaling.factor", 0.0, lo=0.0)
        freq_scale = real("rope.freq_scale", 1.0, positive=True)  # older files state the scale directly
        if scaling == "linear" and factor > 0:
            freq_scale = 1.0 / factor
        elif scaling not in ("none", "linear"):
            raise ConfigError(f"rope scaling {scaling!r} is not supported (supported: none, linear)")

        vocab_size = count("vocab_size", n_vocab, hi=MAX_VOCAB)
        if vocab_size != n_vocab:
            raise ConfigError(f"{arch}.vocab_size {vocab_size} disagrees with the {n_vocab} tokens of "
                              "tokenizer.ggml.tokens")
        return cls(
            arch=arch,
            n_layers=n_layers,
            n_embd=n_embd,
            n_ff=n_ff,
            n_heads=n_heads,
            n_kv_heads=n_kv_heads,
            head_dim=head_dim,
            n_rot=n_rot,
            rope_style=ROPE_STYLE[arch],
            rope_base=real("rope.freq_base", 10000.0, positive=True),
            rope_freq_scale=freq_scale,
            rms_eps=real("attention.layer_norm_rms_epsilon", 1e-5, positive=True, hi=1.0),
            n_ctx_train=count("context_length", 2048, hi=MAX_CONTEXT),
            n_vocab=n_vocab,
        )
