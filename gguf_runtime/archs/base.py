"""What one architecture declares: how its blocks differ from the llama block the shared forward runs.

Every supported architecture is one small module in this package holding an `Architecture` (mlx-lm's
models/<arch>.py, but declarative: model.py has one forward pass that reads these fields, with no
`if arch == ...` in it). A field's default is llama's choice, so an architecture states only its differences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Architecture:
    name: str
    # RoPE pair layout in the GGUF weights: "normal" rotates adjacent dims (2i, 2i+1), which is how llama.cpp's
    # converter permutes llama's Q/K rows; "neox" rotates halves (i, i + n_rot/2), HF's layout, kept by the rest
    rope_style: str = "normal"
    # Q/K/V carry biases (attn_{q,k,v}.bias), required as llama.cpp requires them (qwen2); elsewhere optional
    qkv_bias: bool = False
    # the gated FFN: "silu" (SwiGLU) or "gelu" (GeGLU with tanh-approximated GELU)
    activation: str = "silu"
    # RMSNorm before attention / FFN (attn_norm, ffn_norm); olmo2 has none and normalises the outputs instead
    pre_norms: bool = True
    # RMSNorm of each sublayer's output before the residual add (post_attention_norm, post_ffw_norm)
    post_norms: bool = False
    # RMSNorm of queries and keys (attn_q_norm, attn_k_norm) before RoPE: "head" normalises each head's
    # vector (qwen3, gemma3), "full" the whole projection (olmo2); None: no QK-norm
    qk_norm: str | None = None
    # the token embedding is multiplied by sqrt(n_embd) (gemma)
    embedding_scale: bool = False
    # sliding-window layers: with pattern n, layer i slides when i % n < n - 1 (llama.cpp's set_swa_pattern);
    # 0 means every layer is global. The window is the file's attention.sliding_window.
    swa_pattern: int = 0
    # RoPE base of the sliding layers when it differs from rope.freq_base (gemma3's local layers: 10000),
    # which also take no RoPE scaling
    swa_rope_base: float | None = None
    # tanh soft-cap of attention scores: the default cap when the file states none (gemma2: 50); None: no cap
    attn_softcap_default: float | None = None
    # tanh soft-cap of the final logits, likewise (gemma2: 30)
    final_softcap_default: float | None = None
    # ffn_up holds the gate's rows then the up projection's (2 x n_ff rows; no ffn_gate). A fused attn_qkv
    # (Q, K, V rows in one tensor) needs no flag: it is used wherever the file has one.
    fused_gate_up: bool = False
    # the FFN is a mixture of experts: a router (ffn_gate_inp) picks expert_used_count of expert_count
    # experts (ffn_{gate,up,down}_exps, 3-D) per token, weighted by their softmax probabilities renormalised
    experts: bool = False
    # the attention score scale given the ModelConfig, when it is not 1/sqrt(head_dim)
    attention_scale: Callable[[Any], float] | None = None
