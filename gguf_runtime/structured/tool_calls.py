"""Tool calling: the tools a request offers, the tool-call text each model family writes, parsed incrementally
into OpenAI ``tool_calls``, and the grammar that forces a call (``tool_choice="required"`` or a named function).

Formats (which one a model speaks is read from its chat template, `tool_call_format`):
  - ``hermes``: Qwen2.5, Qwen3, Hermes: ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``, one
    block per call, text around them is content;
  - ``llama3_json``: Llama 3.x: the whole reply is ``{"name": ..., "parameters": {...}}`` (optionally after
    ``<|python_tag|>``; several calls joined by ``;``);
  - ``mistral``: ``[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]``, or the newer
    ``[TOOL_CALLS]name[ARGS]{...}``.
A call is reported once its text is complete (an end tag, or the end of the reply for the formats without
one), as one delta holding its name and whole arguments; content streams as it comes. Text that looks like a
call but does not parse as one is passed on as content, so nothing the model wrote is lost.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from ..errors import StructuredOutputError
from .spans import MarkerScanner

FORMATS = ("hermes", "llama3_json", "mistral")


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON text, as OpenAI sends it
    id: str = ""

    def to_openai(self, index: int | None = None) -> dict[str, Any]:
        call = {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}
        return call if index is None else {"index": index, **call}


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def _call(name: Any, arguments: Any) -> ToolCall | None:
    if not isinstance(name, str) or not name:
        return None
    if isinstance(arguments, str):  # some models write the arguments as JSON text
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return None
    return ToolCall(name, json.dumps(arguments, ensure_ascii=False), new_call_id())


def _calls_from_json(text: str, arguments_key: str = "arguments") -> list[ToolCall] | None:
    """Calls from JSON text: one object or a list of them, each with a name and arguments; None if not."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    items = value if isinstance(value, list) else [value]
    calls = []
    for item in items:
        if not isinstance(item, dict):
            return None
        if isinstance(item.get("function"), dict):  # {"type": "function", "function": {...}}
            item = item["function"]
        call = _call(item.get("name"), item.get(arguments_key, item.get("arguments", item.get("parameters"))))
        if call is None:
            return None
        calls.append(call)
    return calls or None


class HermesToolParser:
    """``<tool_call>{json}</tool_call>`` blocks (Qwen2.5/Qwen3/Hermes). Whitespace between calls is dropped;
    a block that does not parse is passed on as content, tags included. Small Qwen2.5-Coder models often
    write the call's JSON without the tags: a reply that is nothing but call JSON counts as calls too (so a
    reply opening with ``{`` is held until it ends)."""

    START, END = "<tool_call>", "</tool_call>"

    def __init__(self) -> None:
        self._scanner = MarkerScanner()
        self._inside = False
        self._body = ""  # the open call's text so far: a call is reported whole, at its end tag
        self._held_space = ""  # trailing whitespace of the content: kept unless a call follows it
        self._seen_call = False
        self._bare: str | None = ""  # the reply so far while it may be bare call JSON; None once it cannot

    def feed(self, text: str) -> tuple[str, list[ToolCall]]:
        if self._bare is not None:
            self._bare += text
            head = self._bare.lstrip()
            if not head or head.startswith("{"):
                return "", []
            text, self._bare = self._bare, None
        return self._tagged(text)

    def _tagged(self, text: str) -> tuple[str, list[ToolCall]]:
        self._scanner.feed(text)
        content, calls = [], []
        while True:
            if self._inside:
                body, marker = self._scanner.take((self.END,))
                self._body += body
                if marker is None:
                    break
                self._inside = False
                self._close(self._body, content, calls, self.END)
                self._body = ""
            else:
                before, marker = self._scanner.take((self.START,))
                self._outside(before, content, call_follows=marker is not None)
                if marker is None:
                    break
                self._inside = True
        return "".join(content), calls

    def _outside(self, text: str, content: list[str], call_follows: bool) -> None:
        # trailing whitespace waits: it is dropped before a call, kept before more text
        text = self._held_space + text
        body = text.rstrip()
        self._held_space = "" if call_follows else text[len(body):]
        if body:
            content.append(body)

    def _close(self, body: str, content: list[str], calls: list[ToolCall], end: str) -> None:
        parsed = _calls_from_json(body.strip())
        if parsed is None:
            content.append(self.START + body + end)
        else:
            calls.extend(parsed)
            self._seen_call = True

    def finish(self) -> tuple[str, list[ToolCall]]:
        content, calls = [], []
        if self._bare is not None:
            bare, self._bare = self._bare, None
            parsed = _calls_from_json(bare.strip()) if bare.strip() else None
            if parsed is not None:
                return "", parsed
            text, calls = self._tagged(bare)
            content.append(text)
        rest = self._body + self._scanner.flush() if self._inside else self._scanner.flush()
        if self._inside:  # the reply ended before </tool_call> (a stop token right after the JSON)
            self._close(rest, content, calls, "")
        else:
            self._outside(rest, content, call_follows=False)
        tail = self._held_space if not (calls or self._seen_call) else ""
        return "".join(content) + tail, calls


class _WholeReplyParser:
    """Formats whose calls run to the end of the reply: decided at the start (the reply opens with one of
    `openers`), parsed at the end; anything else streams as content."""

    openers: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._text = ""
        self._mode = "undecided"  # -> "content" | "calls"

    def feed(self, text: str) -> tuple[str, list[ToolCall]]:
        if self._mode == "content":
            return text, []
        self._text += text
        if self._mode == "undecided":
            head = self._text.lstrip()
            if not head or any(o.startswith(head) and o != head for o in self.openers):
                return "", []
            self._mode = "calls" if any(head.startswith(o) for o in self.openers) else "content"
            if self._mode == "content":
                text, self._text = self._text, ""
                return text, []
        return "", []

    def finish(self) -> tuple[str, list[ToolCall]]:
        if self._mode == "content":
            return "", []
        calls = self.parse(self._text.strip()) if self._mode == "calls" else None
        return ("", calls) if calls else (self._text, [])

    def parse(self, text: str) -> list[ToolCall] | None:
        raise NotImplementedError


class Llama3JsonToolParser(_WholeReplyParser):
    """Llama 3.x: ``{"name": ..., "parameters": {...}}`` as the whole reply (``;`` between several)."""

    PYTHON_TAG = "<|python_tag|>"
    openers = (PYTHON_TAG, "{")

    def parse(self, text: str) -> list[ToolCall] | None:
        text = text.removeprefix(self.PYTHON_TAG).strip()
        whole = _calls_from_json(text, "parameters")
        if whole is not None:
            return whole
        calls: list[ToolCall] = []
        for part in text.split(";"):
            parsed = _calls_from_json(part.strip(), "parameters")
            if parsed is None:
                return None
            calls.extend(parsed)
        return calls


class MistralToolParser(_WholeReplyParser):
    """Mistral: ``[TOOL_CALLS][{...}, ...]`` (v3) or ``[TOOL_CALLS]name[ARGS]{...}`` (v11 and later)."""

    MARKER, ARGS = "[TOOL_CALLS]", "[ARGS]"
    openers = (MARKER,)

    def parse(self, text: str) -> list[ToolCall] | None:
        calls: list[ToolCall] = []
        for part in text.split(self.MARKER):
            part = part.strip()
            if not part:
                continue
            if self.ARGS in part:
                name, _, arguments = part.partition(self.ARGS)
                call = _call(name.strip(), arguments.strip())
                parsed = [call] if call is not None else None
            else:
                parsed = _calls_from_json(part)
            if parsed is None:
                return None
            calls.extend(parsed)
        return calls


_PARSERS = {"hermes": HermesToolParser, "llama3_json": Llama3JsonToolParser, "mistral": MistralToolParser}


def tool_call_format(template_source: str) -> str:
    """Which tool-call format a chat template teaches its model (hermes when it says nothing of tools)."""
    if "[TOOL_CALLS]" in template_source:
        return "mistral"
    if "<|python_tag|>" in template_source or ("<|start_header_id|>" in template_source
                                               and "parameters" in template_source):
        return "llama3_json"
    return "hermes"


def tool_call_parser(fmt: str):
    """A fresh incremental parser for one reply in format `fmt`."""
    try:
        return _PARSERS[fmt]()
    except KeyError:
        raise StructuredOutputError(f"unknown tool-call format {fmt!r}; known: {', '.join(FORMATS)}") from None


# ---- the request side: tools, tool_choice, and the grammar that forces a call ---------------------------------

def check_tools(tools: Any) -> list[dict]:
    """OpenAI `tools` ([{"type": "function", "function": {"name", "description", "parameters"}}]) checked,
    as plain dicts for the template."""
    if tools is None:
        return []
    if not isinstance(tools, (list, tuple)):
        raise StructuredOutputError(f"tools must be a list of {{'type': 'function', 'function': {{...}}}}, "
                                    f"got {type(tools).__name__}")
    checked = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type", "function") != "function" or not isinstance(function, dict):
            raise StructuredOutputError(f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ..., "
                                        f"'parameters': {{...}}}}}}, got {tool!r}")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise StructuredOutputError(f"tools[{i}].function.name must be a non-empty string, got {name!r}")
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict):
            raise StructuredOutputError(f"tools[{i}].function.parameters must be a JSON schema object, "
                                        f"got {type(parameters).__name__}")
        checked.append({"type": "function", "function": {**function, "parameters": parameters}})
    names = [t["function"]["name"] for t in checked]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise StructuredOutputError(f"tools name the function {duplicate!r} twice")
    return checked


def check_tool_choice(tool_choice: Any, tools: list[dict]) -> str | None:
    """"none", "auto", "required", or the forced function's name (OpenAI's {"type": "function", "function":
    {"name": ...}}); None without tools."""
    if tool_choice is None:
        return "auto" if tools else None
    if isinstance(tool_choice, str):
        if tool_choice not in ("none", "auto", "required"):
            raise StructuredOutputError(f"tool_choice must be 'none', 'auto', 'required' or "
                                        f"{{'type': 'function', 'function': {{'name': ...}}}}, got {tool_choice!r}")
        if tool_choice != "none" and not tools:
            raise StructuredOutputError(f"tool_choice {tool_choice!r} needs tools")
        return tool_choice if tools else None
    name = tool_choice.get("function", {}).get("name") if isinstance(tool_choice, dict) else None
    if not isinstance(name, str):
        raise StructuredOutputError(f"tool_choice must name a function as {{'type': 'function', 'function': "
                                    f"{{'name': ...}}}}, got {tool_choice!r}")
    if name not in {t["function"]["name"] for t in tools}:
        raise StructuredOutputError(f"tool_choice names {name!r}, which is not among the tools")
    return name


def _call_schema(tool: dict, arguments_key: str) -> dict:
    function = tool["function"]
    return {"type": "object", "x-guidance": {"whitespace_flexible": False}, "properties": {"name": {"const": function["name"]},
                                             arguments_key: function["parameters"]},
            "required": ["name", arguments_key], "additionalProperties": False}


def _literal(text: str, special_ids: dict[str, int]) -> str:
    """A Lark terminal for `text`: the special token by id when the vocabulary has it as one token (the model
    writes it as that token, never as its spelling), else the quoted string."""
    token = special_ids.get(text)
    return f"<[{token}]>" if token is not None else json.dumps(text)


def forced_call_grammar(tools: list[dict], choice: str, fmt: str, special_ids: dict[str, int],
                        parallel: bool = True) -> str:
    """An llguidance Lark grammar whose every sentence is a valid call in format `fmt` (one or more when
    `parallel`, OpenAI's parallel_tool_calls): of any tool for tool_choice "required", of the named one
    otherwise. `special_ids` maps special-token texts (such as ``<tool_call>``) to their ids."""
    chosen = tools if choice == "required" else [t for t in tools if t["function"]["name"] == choice]
    key = "parameters" if fmt == "llama3_json" else "arguments"
    one = {"anyOf": [_call_schema(t, key) for t in chosen]} if len(chosen) > 1 else _call_schema(chosen[0], key)
    if fmt == "hermes":
        start, end = (_literal(t, special_ids) for t in (HermesToolParser.START, HermesToolParser.END))
        more = ' ("\\n" call)*' if parallel else ""
        return (f"start: call{more}\ncall: {start} \"\\n\" body \"\\n\" {end}\n"
                f"body: %json {json.dumps(one)}\n")
    if fmt == "mistral":
        calls = {"type": "array", "items": one, "minItems": 1, **({} if parallel else {"maxItems": 1})}
        return f"start: {_literal(MistralToolParser.MARKER, special_ids)} body\nbody: %json {json.dumps(calls)}\n"
    return f"start: body\nbody: %json {json.dumps(one)}\n"
