"""Structured output for the server (issue #16): response_format, llama.cpp's grammar / json_schema, and the
tools a chat request offers.

`structured_hook` turns a request's constraint fields into the `structured_outputs` SamplingParams field
(structured.requests does the reading); the schema, regex or grammar itself is compiled when the engine adds
the request, so a bad one is a 400 before any token. `offered_tools` checks a chat request's tools and
tool_choice; the chat route renders them through the model's template and parses the calls back out.
"""

from __future__ import annotations

from typing import Any

from ..errors import StructuredOutputError
from ..structured.requests import structured_outputs_from_request
from .errors import bad_request, one_line

_CONSTRAINT_FIELDS = ("response_format", "grammar", "json_schema")


def structured_hook(req) -> dict[str, Any]:
    """SamplingParams fields for the request's structured output ({} when it asks for none)."""
    body = {name: getattr(req, name) for name in _CONSTRAINT_FIELDS if getattr(req, name, None) is not None}
    try:
        constraint = structured_outputs_from_request(body)
    except StructuredOutputError as err:
        raise bad_request(one_line(err), param=next(iter(body), None), code="invalid_structured_output") from None
    return {} if constraint is None else {"structured_outputs": constraint}


def offered_tools(llm, req) -> list[dict] | None:
    """The checked tools the template gets (None without tools or with tool_choice "none"); 400 when bad."""
    try:
        return llm.offered_tools(req.tools, req.tool_choice)
    except StructuredOutputError as err:
        raise bad_request(one_line(err), param="tools", code="invalid_tools") from None


def tool_params(llm, params, req):
    """`params` plus the grammar that forces a call for tool_choice "required" or a named function."""
    try:
        return llm.chat_params(params, req.tools, req.tool_choice,
                               True if req.parallel_tool_calls is None else req.parallel_tool_calls)
    except StructuredOutputError as err:
        raise bad_request(one_line(err), param="tool_choice", code="invalid_tools") from None
