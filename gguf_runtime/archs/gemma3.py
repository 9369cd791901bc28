"""Gemma 3: GeGLU, per-head QK-norm, norms before and after each sublayer, embeddings scaled by sqrt(n_embd),
and five sliding-window layers (RoPE base 10000, unscaled) to every global one (rope.freq_base, with the file's
linear scaling). The GGUF norm weights already hold Gemma's (1 + w): the converter adds the one."""

import math

from .base import Architecture


def attention_scale(c) -> float:
    """llama.cpp: 1/sqrt(n_embd / n_head) for the 27B model (62 layers), 1/sqrt(head_dim) for the others."""
    return 1.0 / math.sqrt(c.n_embd / c.n_heads if c.n_layers == 62 else c.head_dim)


ARCH = Architecture(name="gemma3", rope_style="neox", activation="gelu", post_norms=True, qk_norm="head",
                    embedding_scale=True, swa_pattern=6, swa_rope_base=10000.0, attention_scale=attention_scale)
