"""Gemma 2: GeGLU, norms before and after each sublayer, embeddings scaled by sqrt(n_embd), every other layer
sliding (even ones), and tanh soft-caps on attention scores (50) and on the final logits (30)."""

import math

from .base import Architecture


def attention_scale(c) -> float:
    """llama.cpp: 1/sqrt(n_embd / n_head) for the 27B model (46 layers), 1/sqrt(head_dim) for the others."""
    return 1.0 / math.sqrt(c.n_embd / c.n_heads if c.n_layers == 46 else c.head_dim)


ARCH = Architecture(name="gemma2", rope_style="neox", activation="gelu", post_norms=True, embedding_scale=True,
                    swa_pattern=2, attn_softcap_default=50.0, final_softcap_default=30.0,
                    attention_scale=attention_scale)
