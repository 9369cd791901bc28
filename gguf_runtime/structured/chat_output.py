"""A chat reply as OpenAI shapes it: generated text split, as it streams, into ``reasoning_content``,
``content`` and ``tool_calls``. The API, the REPL and the server all feed it the text deltas the engine gives.

The reasoning split runs first (a model may think, then call a tool), the tool-call parser on what is left.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .reasoning import THINK_START, ReasoningParser, starts_in_reasoning
from .tool_calls import ToolCall, tool_call_format, tool_call_parser


@dataclass
class ChatDelta:
    """What one piece of generated text adds: OpenAI's streaming ``delta`` fields (tool_calls carry an index)."""

    content: str = ""
    reasoning_content: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.content or self.reasoning_content or self.tool_calls)

    def to_openai(self) -> dict[str, Any]:
        """The non-empty fields, as a chat.completion.chunk ``delta``."""
        out: dict[str, Any] = {}
        if self.reasoning_content:
            out["reasoning_content"] = self.reasoning_content
        if self.content:
            out["content"] = self.content
        if self.tool_calls:
            out["tool_calls"] = self.tool_calls
        return out


class ChatOutputParser:
    """Feed text deltas (`feed`), then `finish` once; `message()` is the whole assistant message so far.

    `reasoning`: split think blocks out (models whose template or vocabulary knows ``<think>``);
    `in_reasoning`: the prompt already opened one. `tool_format`: parse tool calls in that format (None: the
    request offered no tools, so all non-reasoning text is content).
    """

    def __init__(self, reasoning: bool = False, in_reasoning: bool = False, tool_format: str | None = None):
        self._reasoning = ReasoningParser(in_reasoning) if reasoning else None
        self._tools = tool_call_parser(tool_format) if tool_format is not None else None
        self.content = ""
        self.reasoning_content = ""
        self.tool_calls: list[ToolCall] = []
        self.finished = False

    def feed(self, text: str) -> ChatDelta:
        reasoning, content = self._reasoning.feed(text) if self._reasoning else ("", text)
        return self._emit(reasoning, content, final=False)

    def finish(self) -> ChatDelta:
        """What was held back (a partial tag, a call without its end); call once, after the last delta."""
        if self.finished:
            return ChatDelta()
        self.finished = True
        reasoning, content = self._reasoning.finish() if self._reasoning else ("", "")
        return self._emit(reasoning, content, final=True)

    def _emit(self, reasoning: str, content: str, final: bool) -> ChatDelta:
        calls: list[ToolCall] = []
        if self._tools is not None:
            content, calls = self._tools.feed(content)
            if final:
                more, last = self._tools.finish()
                content, calls = content + more, calls + last
        first = len(self.tool_calls)
        self.reasoning_content += reasoning
        self.content += content
        self.tool_calls += calls
        return ChatDelta(content, reasoning, [c.to_openai(first + i) for i, c in enumerate(calls)])

    def message(self) -> dict[str, Any]:
        """The assistant message: OpenAI's ``choices[i].message`` (content None when only tools were called)."""
        message: dict[str, Any] = {"role": "assistant",
                                   "content": self.content if self.content or not self.tool_calls else None}
        if self.reasoning_content:
            message["reasoning_content"] = self.reasoning_content
        if self.tool_calls:
            message["tool_calls"] = [c.to_openai() for c in self.tool_calls]
        return message


def knows_thinking(template_source: str, vocabulary: dict[str, int] | None = None) -> bool:
    """True for reasoning models: the chat template or the vocabulary has the ``<think>`` tag."""
    return THINK_START in template_source or (vocabulary is not None and THINK_START in vocabulary)


def chat_output_parser(template_source: str, prompt: str, *, tools: bool, vocabulary: dict[str, int] | None = None,
                       tool_format: str | None = None) -> ChatOutputParser:
    """The parser for one reply to `prompt` (the rendered prompt text) of a model with this chat template.
    `tools`: the request offered tools and may get calls back; `tool_format` overrides the template's."""
    thinking = knows_thinking(template_source, vocabulary)
    return ChatOutputParser(reasoning=thinking, in_reasoning=thinking and starts_in_reasoning(prompt),
                            tool_format=(tool_format or tool_call_format(template_source)) if tools else None)


def parse_chat_output(text: str, **kwargs) -> dict[str, Any]:
    """The assistant message for a whole reply at once (`chat_output_parser`'s arguments)."""
    parser = chat_output_parser(**kwargs)
    parser.feed(text)
    parser.finish()
    return parser.message()
