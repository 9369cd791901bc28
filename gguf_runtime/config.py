"""Model hyperparameters, read once from GGUF metadata into one frozen dataclass."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from .archs import ARCHITECTURES, SUPPORTED_ARCHITECTURES, Architecture
from .errors import ConfigError  # noqa: F401  (re-exported: its old home)
from .metadata import MISSING, get_float, get_int, get_str

# Bounds on hyperparameters, so no size computed from them can overflow or ask for absurd memory before the
# tensor shapes (which must then match them) are checked. LLAMA_MAX_LAYERS is 512; the rest are generous
# over any released model (Llama 3.1 405B: n_embd 16384, n_ff 53248, 128 heads; Gemma: head size 256).
MAX_LAYERS = 512
MAX_HEADS = 1024
MAX_HEAD_DIM = 1024
MAX_SIZE = 1 << 20  # embedding and feed-forward widths
MAX_VOCAB = 1 << 24
MAX_CONTEXT = 1 << 24




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
    # rope.scaling.attn_factor: every RoPE's cos and sin are scaled by it, so attention scores by its square
    # (phi3 LongRoPE files: sqrt(1 + ln(scale) / ln(original context)); llama.cpp folds it into attn_factor)
    rope_attn_factor: float
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
        """Read and sanity-check the hyperparameters (as llama_model::load_hparams does) before anything is
        allocated from them. `n_vocab`: the tokenizer's vocabulary size, which the embedding rows must match."""
        arch = get_str(md, "general.architecture")
        if arch not in ARCHITECTURES:
            raise ConfigError(f"unsupported architecture {arch!r}; supported: {', '.join(SUPPORTED_ARCHITECTURES)}")

        def count(name: str, default: Any = MISSING, lo: int = 1, hi: int = MAX_SIZE) -> int:
            return get_int(md, f"{arch}.{name}", default, lo=lo, hi=hi)

        def real(name: str, default: float, **bounds) -> float:
            return get_float(md, f"{arch}.{name}", default, **bounds)

        n_layers = count("block_count", hi=MAX_LAYERS)
        n_embd = count("embedding_length")
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
        if scaling in ("linear", "yarn") and factor > 0:
            freq_scale = 1.0 / factor
        elif scaling not in ("none", "linear", "yarn"):
            raise ConfigError(f"rope scaling {scaling!r} is not supported (supported: none, linear, yarn)")
        n_ctx_train = count("context_length", 2048, hi=MAX_CONTEXT)
        yarn = tuple(real(f"rope.scaling.yarn_{name}", default)  # llama.cpp's defaults
                     for name, default in (("ext_factor", 1.0), ("attn_factor", 1.0), ("beta_fast", 32.0),
                                           ("beta_slow", 1.0))) if scaling == "yarn" else None

        spec = ARCHITECTURES[arch]
        rope_base = real("rope.freq_base", 10000.0, positive=True)
        window = count("attention.sliding_window", 0, lo=0, hi=MAX_CONTEXT) if spec.swa_pattern else 0
        pattern = spec.swa_pattern  # as llama.cpp: the architecture's, whatever else the file says
        sliding = tuple(window > 0 and i % pattern < pattern - 1 for i in range(n_layers))
        n_expert = count("expert_count", 0, lo=0, hi=MAX_HEADS) if spec.experts else 0
        n_expert_used = count("expert_used_count", hi=MAX_HEADS) if n_expert else 0
        if n_expert and not 0 < n_expert_used <= n_expert:
            raise ConfigError(f"{arch}.expert_used_count {n_expert_used} does not fit expert_count {n_expert}")
        n_ff = count("expert_feed_forward_length" if n_expert else "feed_forward_length")

        def softcap(name: str, default: float | None) -> float:
            return real(name, default or 0.0, lo=0.0)

        vocab_size = count("vocab_size", n_vocab, hi=MAX_VOCAB)
        if vocab_size != n_vocab:
            raise ConfigError(f"{arch}.vocab_size {vocab_size} disagrees with the {n_vocab} tokens of "
                              "tokenizer.ggml.tokens")
        config = cls(
            arch=arch,
            n_layers=n_layers,
            n_embd=n_embd,
            n_ff=n_ff,
            n_heads=n_heads,
            n_kv_heads=n_kv_heads,
            head_dim=head_dim,
            n_rot=n_rot,
            rope_style=spec.rope_style,
            rope_base=rope_base,
            rope_freq_scale=freq_scale,
            rms_eps=real("attention.layer_norm_rms_epsilon", 1e-5, positive=True, hi=1.0),
            n_ctx_train=n_ctx_train,
            rope_orig_ctx=count("rope.scaling.original_context_length", n_ctx_train, hi=MAX_CONTEXT),
            rope_yarn=yarn,
            rope_attn_factor=real("rope.scaling.attn_factor", 1.0, positive=True),
            n_vocab=n_vocab,
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
