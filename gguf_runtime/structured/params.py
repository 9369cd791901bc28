"""What a request asks its output to match: vLLM's `StructuredOutputsParams` (and the older
`GuidedDecodingParams`), checked for shape here, compiled by `grammar.compile_grammar`.

This module imports no grammar engine, so building SamplingParams stays cheap; whether a schema, regex or
grammar is valid is decided when a request is added (before any token), by the engine, in one place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from ..errors import StructuredOutputError

# the kinds of constraint; exactly one is set
KINDS = ("json", "regex", "choice", "grammar", "json_object")
_BACKENDS = (None, "auto", "guidance", "llguidance")


@dataclass(frozen=True)
class StructuredOutputsParams:
    """Constrain generated text to a JSON schema (`json`: a dict or its JSON text), a regular expression
    (`regex`, Rust regex syntax, anchored at both ends), one of a few strings (`choice`), a context-free grammar
    (`grammar`: llama.cpp's GBNF, or llguidance's Lark), or any JSON object (`json_object=True`).

    `disable_any_whitespace` makes JSON compact (no free whitespace between tokens: fewer tokens, and small
    models cannot wander off into blank lines); `disable_additional_properties` treats a schema object without
    ``additionalProperties`` as closed; `whitespace_pattern` is a regex for the whitespace JSON may use. These
    are vLLM's names; `disable_fallback` and `structural_tag` are accepted only at their defaults.
    """

    json: str | dict | None = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    disable_any_whitespace: bool = False
    disable_additional_properties: bool = False
    whitespace_pattern: str | None = None
    disable_fallback: bool = False
    structural_tag: str | None = None

    def __post_init__(self) -> None:
        given = [k for k in KINDS if getattr(self, k) not in (None, False)]
        if len(given) != 1:
            raise StructuredOutputError(
                "structured output needs exactly one of json, regex, choice, grammar or json_object"
                + (f", got {', '.join(given)}" if given else ""))
        if self.structural_tag is not None:
            raise StructuredOutputError("structured output: structural_tag is not supported")
        if isinstance(self.json, str):
            try:
                object.__setattr__(self, "json", json.loads(self.json))
            except json.JSONDecodeError as e:
                raise StructuredOutputError(f"the JSON schema is not valid JSON: {e}") from None
        if self.json is not None and not isinstance(self.json, dict):
            raise StructuredOutputError(f"the JSON schema must be an object, got {type(self.json).__name__}")
        for name in ("regex", "grammar", "whitespace_pattern"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise StructuredOutputError(f"structured output: {name} must be a non-empty string, got {value!r}")
        if self.choice is not None:
            choice = list(self.choice) if isinstance(self.choice, (list, tuple)) else None
            if not choice or not all(isinstance(c, str) and c for c in choice):
                raise StructuredOutputError(f"structured output: choice must be a non-empty list of non-empty "
                                            f"strings, got {self.choice!r}")
            object.__setattr__(self, "choice", choice)
        if self.json_object not in (None, True, False):
            raise StructuredOutputError(f"structured output: json_object must be True, got {self.json_object!r}")

    @property
    def kind(self) -> str:
        """Which constraint this is: one of `KINDS`."""
        return next(k for k in KINDS if getattr(self, k) not in (None, False))


@dataclass(frozen=True)
class GuidedDecodingParams(StructuredOutputsParams):
    """vLLM's older name for `StructuredOutputsParams` (``SamplingParams(guided_decoding=...)``); `backend`
    may only name the engine we use."""

    backend: str | None = None

    def __post_init__(self) -> None:
        if self.backend not in _BACKENDS:
            raise StructuredOutputError(f"guided decoding backend {self.backend!r} is not available; this "
                                        f"runtime uses llguidance")
        super().__post_init__()

    def to_structured_outputs(self) -> StructuredOutputsParams:
        return StructuredOutputsParams(**{f.name: getattr(self, f.name) for f in fields(StructuredOutputsParams)})


def coerce(value: Any, name: str) -> StructuredOutputsParams | None:
    """`value` as StructuredOutputsParams: None, an instance, or a dict of its fields (as JSON gives them)."""
    if value is None or isinstance(value, StructuredOutputsParams):
        return value.to_structured_outputs() if isinstance(value, GuidedDecodingParams) else value
    if isinstance(value, dict):
        known = {f.name for f in fields(GuidedDecodingParams)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise StructuredOutputError(f"{name} got unknown field(s) {', '.join(unknown)}; known: "
                                        f"{', '.join(sorted(known))}")
        return GuidedDecodingParams(**value).to_structured_outputs()
    raise StructuredOutputError(f"{name} must be StructuredOutputsParams (or a dict of its fields), "
                                f"got {type(value).__name__}")
