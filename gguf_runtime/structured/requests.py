"""HTTP request fields -> StructuredOutputsParams: OpenAI's ``response_format``, llama.cpp's ``grammar`` and
``json_schema``, vLLM's ``structured_outputs`` and ``guided_*`` extras, and ``tools`` / ``tool_choice``.

Pure functions of the request body (a dict), so the server turns a request into sampling parameters without
knowing these fields; every malformed one raises StructuredOutputError with a one-line reason (HTTP 400).
"""

from __future__ import annotations

from typing import Any, Mapping

from ..errors import StructuredOutputError
from .params import StructuredOutputsParams, coerce
from .tool_calls import check_tool_choice, check_tools, forced_call_grammar

# vLLM's older request extras: body field -> StructuredOutputsParams field
_GUIDED_FIELDS = {"guided_json": "json", "guided_regex": "regex", "guided_choice": "choice",
                  "guided_grammar": "grammar"}


def structured_outputs_from_request(body: Mapping[str, Any]) -> StructuredOutputsParams | None:
    """The structured-output constraint a completion or chat request asks for (None: unconstrained).

    Accepts ``response_format`` {"type": "text" | "json_object" | "json_schema", "json_schema": {"schema":
    ...}} (llama.cpp's {"type": "json_object", "schema": ...} too), ``json_schema`` and ``grammar`` (llama.cpp),
    ``structured_outputs`` (vLLM) and ``guided_json`` / ``guided_regex`` / ``guided_choice`` /
    ``guided_grammar`` (vLLM's older extras, with ``guided_whitespace_pattern``). More than one is an error.
    """
    found: list[tuple[str, StructuredOutputsParams]] = []
    response_format = body.get("response_format")
    if response_format is not None:
        params = _from_response_format(response_format)
        if params is not None:
            found.append(("response_format", params))
    if body.get("json_schema") is not None:
        found.append(("json_schema", _params(json=_schema(body["json_schema"], "json_schema"))))
    if body.get("grammar") is not None:
        found.append(("grammar", _params(grammar=body["grammar"])))
    if body.get("structured_outputs") is not None:
        found.append(("structured_outputs", coerce(body["structured_outputs"], "structured_outputs")))
    guided = {field: body[key] for key, field in _GUIDED_FIELDS.items() if body.get(key) is not None}
    if body.get("guided_json_object"):
        guided["json_object"] = True
    if guided:
        found.append((", ".join(k for k in _GUIDED_FIELDS if body.get(k) is not None) or "guided_json_object",
                      _params(whitespace_pattern=body.get("guided_whitespace_pattern"), **guided)))
    if len(found) > 1:
        raise StructuredOutputError(f"give one structured-output constraint, got {' and '.join(n for n, _ in found)}")
    return found[0][1] if found else None


def _from_response_format(response_format: Any) -> StructuredOutputsParams | None:
    if not isinstance(response_format, Mapping):
        raise StructuredOutputError(f"response_format must be an object with a 'type', got {response_format!r}")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        schema = response_format.get("schema")  # llama.cpp's extension
        return _params(json=_schema(schema, "response_format.schema")) if schema is not None \
            else _params(json_object=True)
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, Mapping) or "schema" not in spec:
            raise StructuredOutputError("response_format json_schema needs {'json_schema': {'name': ..., "
                                        "'schema': {...}}}")
        return _params(json=_schema(spec["schema"], "response_format.json_schema.schema"))
    raise StructuredOutputError(f"response_format type must be 'text', 'json_object' or 'json_schema', got {kind!r}")


def _schema(value: Any, where: str) -> dict | str:
    if not isinstance(value, (Mapping, str)):
        raise StructuredOutputError(f"{where} must be a JSON schema object, got {type(value).__name__}")
    return dict(value) if isinstance(value, Mapping) else value


def _params(**fields: Any) -> StructuredOutputsParams:
    return StructuredOutputsParams(**{k: v for k, v in fields.items() if v is not None})


def tool_call_constraint(tools: Any, tool_choice: Any, fmt: str, special_ids: Mapping[str, int],
                         parallel: bool = True) -> StructuredOutputsParams | None:
    """The constraint that forces a tool call, for tool_choice "required" or a named function (None for
    "auto" / "none" / no tools). `fmt` is the model's tool-call format (`tool_calls.tool_call_format`),
    `special_ids` its special tokens by text (`special_token_ids`); `parallel` (OpenAI's parallel_tool_calls)
    allows more than one call."""
    checked = check_tools(tools)
    choice = check_tool_choice(tool_choice, checked)
    if choice in (None, "none", "auto"):
        return None
    return StructuredOutputsParams(grammar=forced_call_grammar(checked, choice, fmt, dict(special_ids), parallel))


def special_token_ids(tokenizer) -> dict[str, int]:
    """Control and user-defined tokens by their text (``<tool_call>`` -> 151657), for `tool_call_constraint`."""
    vocab = tokenizer.vocab
    return {vocab.tokens[i]: i for i in vocab.special_ids if tokenizer.is_special(i)}
