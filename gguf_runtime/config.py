"""Model hyperparameters, read once from GGUF metadata into one frozen dataclass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .errors import ConfigError  # noqa: F401  (re-exported: its old home)

# How each architecture lays out RoPE pairs in its GGUF weights. llama.cpp's converter permutes llama's Q/K
# rows so adjacent dims (2i, 2i+1) rotate together ("normal"); qwen2 keeps HF's halves (i, i + n_rot/2), "neox".
ROPE_STYLE = {"llama": "normal", "qwen2": "neox"}
SUPPORTED_ARCHITECTURES = tuple(ROPE_STYLE)




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
        arch = md.get("general.architecture")
        if arch not in ROPE_STYLE:
            raise ConfigError(f"unsupported architecture {arch!r}; supported: {', '.join(SUPPORTED_ARCHITECTURES)}")

        def key(name: str, default: Any = None) -> Any:
            value = md.get(f"{arch}.{name}", default)
            if value is None:
                raise ConfigError(f"metadata key {arch}.{name} is missing")
            return value

        n_embd = int(key("embedding_length"))
        n_heads = int(key("attention.head_count"))
        n_kv_heads = int(key("attention.head_count_kv", n_heads))
        if n_heads <= 0 or n_kv_heads <= 0 or n_heads % n_kv_heads:
            raise ConfigError(f"head counts {n_heads}/{n_kv_heads} are not a valid grouped-query layout")
        head_dim = int(md.get(f"{arch}.attention.key_length", n_embd // n_heads))
        n_rot = int(md.get(f"{arch}.rope.dimension_count", head_dim))
        if n_rot > head_dim or n_rot % 2:
            raise ConfigError(f"rope.dimension_count {n_rot} does not fit head size {head_dim}")

        scaling = md.get(f"{arch}.rope.scaling.type", "none")
        factor = float(md.get(f"{arch}.rope.scaling.factor", 0.0) or 0.0)
        freq_scale = float(md.get(f"{arch}.rope.freq_scale", 1.0))  # older files state the scale directly
        if scaling == "linear" and factor > 0:
            freq_scale = 1.0 / factor
        elif scaling not in ("none", "linear"):
            raise ConfigError(f"rope scaling {scaling!r} is not supported (supported: none, linear)")

        return cls(
            arch=arch,
            n_layers=int(key("block_count")),
            n_embd=n_embd,
            n_ff=int(key("feed_forward_length")),
            n_heads=n_heads,
            n_kv_heads=n_kv_heads,
            head_dim=head_dim,
            n_rot=n_rot,
            rope_style=ROPE_STYLE[arch],
            rope_base=float(md.get(f"{arch}.rope.freq_base", 10000.0)),
            rope_freq_scale=freq_scale,
            rms_eps=float(md.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
            n_ctx_train=int(md.get(f"{arch}.context_length", 2048)),
            n_vocab=int(md.get(f"{arch}.vocab_size", n_vocab)),
        )
