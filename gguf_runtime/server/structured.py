"""The seam for structured output (issue #16): response_format, grammar, json_schema, tools and tool_choice.

`structured_hook` turns a request's structured-output fields into extra `SamplingParams` fields for the
engine's constraint. Until the grammar engine is wired in, a request that asks for structured output gets a
clear 400 instead of silently unconstrained text.
"""

from __future__ import annotations

from typing import Any

from .errors import bad_request
from .protocol import structured_fields


def structured_hook(req) -> dict[str, Any]:
    """SamplingParams fields for the request's structured output ({} when it asks for none)."""
    fields = structured_fields(req)
    if fields:
        name = next(iter(fields))
        raise bad_request(f"{name} is not supported yet by this server (structured output and tool calling "
                          f"are being added); send the request without it", param=name,
                          code="unsupported_parameter")
    return {}
