"""Qwen3-MoE (30B-A3B, 235B-A22B): qwen3's attention, and a mixture of experts for every FFN (no shared
expert): the router's softmax picks expert_used_count experts per token, their weights renormalised to 1."""

from .base import Architecture

ARCH = Architecture(name="qwen3moe", rope_style="neox", qk_norm="head", experts=True)
