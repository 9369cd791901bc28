"""Phi-3 / Phi-3.5 / Phi-4-mini: llama's block with Q, K, V in one tensor (attn_qkv) and gate and up in one
(ffn_up, gate rows first), NeoX RoPE, and LongRoPE's per-dim factors (rope_factors_long/short) where present.
llama.cpp turns Phi's sliding window off, and so do we (no swa_pattern)."""

from .base import Architecture

ARCH = Architecture(name="phi3", rope_style="neox", fused_gate_up=True)
