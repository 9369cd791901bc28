"""Qwen2 / Qwen2.5: llama with Q/K/V biases and NeoX RoPE."""

from .base import Architecture

ARCH = Architecture(name="qwen2", rope_style="neox", qkv_bias=True)
