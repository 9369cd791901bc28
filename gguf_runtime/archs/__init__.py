"""The architectures the runtime runs: one module each, declaring how its block differs from llama's."""

from __future__ import annotations

from . import gemma2, gemma3, llama, olmo2, phi3, qwen2, qwen3, qwen3moe
from .base import Architecture

ARCHITECTURES: dict[str, Architecture] = {
    m.ARCH.name: m.ARCH for m in (llama, qwen2, qwen3, qwen3moe, gemma2, gemma3, phi3, olmo2)
}
SUPPORTED_ARCHITECTURES = tuple(ARCHITECTURES)

__all__ = ["ARCHITECTURES", "SUPPORTED_ARCHITECTURES", "Architecture"]
