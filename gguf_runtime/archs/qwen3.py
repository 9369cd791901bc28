"""Qwen3: qwen2 without the Q/K/V biases, plus a per-head RMSNorm of queries and keys; head_dim comes from
attention.key_length (128 for every size, not n_embd / n_head)."""

from .base import Architecture

ARCH = Architecture(name="qwen3", rope_style="neox", qk_norm="head")
