"""Model hyperparameters, read once from GGUF metadata into one frozen dataclass."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from .archs import ARCHITECTURES, SUPPORTED_ARCHITECTURES, Architecture
from .errors import ConfigError  # noqa: F401  (re-exported: its old home)




@dataclass(frozen=True)
class ModelConfig:
    arch: str
    n_layers: int
    n_embd: int
    n_ff: int  # FFN width (of each expert, for a mixture of experts)
    n_heads: int
    n_kv_heads: int
    head_dim: int
    n_rot: int  # rotated dims per head (may be < head_dim)
    rope_style: str  # "normal" | "neox"
    rope_base: float
    rope_freq_scale: float  # linear or YaRN scaling: positions are multiplied by this (1 / scaling.factor)
    rope_orig_ctx: int  # the context the model was trained for before RoPE scaling (YaRN, LongRoPE)
    rope_yarn: tuple[float, float, float, float] | None  # YaRN's (ext_factor, attn_factor, beta_fast, beta_slow)
    rms_eps: float
    n_ctx_train: int
    n_vocab: int
    attn_scale: float  # attention scores are (q · k) * attn_scale
    embedding_scale: float  # the token embedding is multiplied by this (gemma: sqrt(n_embd))
    sliding_window: int  # positions a sliding layer attends over (the current one included); 0: none
    sliding_layers: tuple[bool, ...]  # per layer: does it slide?
    swa_rope_base: float  # RoPE base of sliding layers (which take no RoPE scaling)
    attn_softcap: float  # scores become cap · tanh(score / cap); 0: no cap
    final_softcap: float  # the same for the output logits
    n_expert: int  # experts per FFN layer; 0: a dense FFN
    n_expert_used: int  # experts each token runs through

    @property
    def spec(self) -> Architecture:
        """The architecture's declared differences (norm placement, QK-norm, activation, ...)."""
        return ARCHITECTURES[self.arch]

    def layer_window(self, layer: int) -> int:
        """Positions layer `layer` attends over; 0 means all of them."""
        return self.sliding_window if self.sliding_layers[layer] else 0

    def layer_rope(self, layer: int) -> tuple[float, float]:
        """(base, freq_scale) of the layer's RoPE."""
        if self.sliding_layers[layer]:
            return self.swa_rope_base, 1.0 if self.spec.swa_rope_base is not None else self.rope_freq_scale
        return self.rope_base, self.rope_freq_scale

    @property
    def n_group(self) -> int:
        """Query heads that share one key/value head (grouped-query attention)."""
        return self.n_heads // self.n_kv_heads

    @classmethod
    def from_metadata(cls, md: Mapping[str, Any], n_vocab: int) -> "ModelConfig":
        arch = md.get("general.architecture")
        if arch not in ARCHITECTURES:
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
        if scaling in ("linear", "yarn") and factor > 0:
            freq_scale = 1.0 / factor
        elif scaling not in ("none", "linear", "yarn"):
            raise ConfigError(f"rope scaling {scaling!r} is not supported (supported: none, linear, yarn)")
        n_ctx_train = int(md.get(f"{arch}.context_length", 2048))
        yarn = tuple(float(md.get(f"{arch}.rope.scaling.yarn_{name}", default))  # llama.cpp's defaults
                     for name, default in (("ext_factor", 1.0), ("attn_factor", 1.0), ("beta_fast", 32.0),
                                           ("beta_slow", 1.0))) if scaling == "yarn" else None

        spec = ARCHITECTURES[arch]
        n_layers = int(key("block_count"))
        rope_base = float(md.get(f"{arch}.rope.freq_base", 10000.0))
        window = int(md.get(f"{arch}.attention.sliding_window", 0) or 0) if spec.swa_pattern else 0
        pattern = spec.swa_pattern  # as llama.cpp: the architecture's, whatever else the file says
        sliding = tuple(window > 0 and i % pattern < pattern - 1 for i in range(n_layers))
        n_expert = int(md.get(f"{arch}.expert_count", 0) or 0) if spec.experts else 0
        n_expert_used = int(key("expert_used_count")) if n_expert else 0
        if n_expert and not 0 < n_expert_used <= n_expert:
            raise ConfigError(f"expert_used_count {n_expert_used} does not fit expert_count {n_expert}")

        def softcap(name: str, default: float | None) -> float:
            return float(md.get(f"{arch}.{name}", default or 0.0) or 0.0)

        config = cls(
            arch=arch,
            n_layers=n_layers,
            n_embd=n_embd,
            n_ff=int(key("expert_feed_forward_length" if n_expert else "feed_forward_length")),
            n_heads=n_heads,
            n_kv_heads=n_kv_heads,
            head_dim=head_dim,
            n_rot=n_rot,
            rope_style=spec.rope_style,
            rope_base=rope_base,
            rope_freq_scale=freq_scale,
            rms_eps=float(md.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
            n_ctx_train=n_ctx_train,
            rope_orig_ctx=int(md.get(f"{arch}.rope.scaling.original_context_length", n_ctx_train)),
            rope_yarn=yarn,
            n_vocab=int(md.get(f"{arch}.vocab_size", n_vocab)),
            attn_scale=1.0 / math.sqrt(head_dim),
            embedding_scale=math.sqrt(n_embd) if spec.embedding_scale else 1.0,
            sliding_window=window,
            sliding_layers=sliding,
            swa_rope_base=spec.swa_rope_base if spec.swa_rope_base is not None else rope_base,
            attn_softcap=softcap("attn_logit_softcapping", spec.attn_softcap_default),
            final_softcap=softcap("final_logit_softcapping", spec.final_softcap_default),
            n_expert=n_expert,
            n_expert_used=n_expert_used,
        )
        if spec.attention_scale is not None:
            config = dataclasses.replace(config, attn_scale=spec.attention_scale(config))
        return config
