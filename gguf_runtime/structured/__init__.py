"""Structured output (JSON schema, regex, choice, grammar), tool calling and reasoning-model output.

params: what a request asks for (no engine import); grammar: llguidance compiled over our vocabulary, and the
per-sequence constraint the engine applies; the parsers split generated text into content, reasoning and tool
calls for the API, the CLI and the server.
"""

from .params import GuidedDecodingParams, StructuredOutputsParams

__all__ = ["GuidedDecodingParams", "StructuredOutputsParams"]
