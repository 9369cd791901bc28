"""Print a chat reply as it streams: thinking dimmed, the answer plain, tool calls as readable one-liners.

`ReplyPrinter` is a text sink for `stream_to` (write/flush): each delta goes through the reply's
ChatOutputParser, and what comes out is printed by kind. `finish()` prints what the parser held back.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from rich.console import Console
from rich.text import Text

if TYPE_CHECKING:
    from ..structured.chat_output import ChatDelta, ChatOutputParser


def format_tool_call(call: dict) -> str:
    """``get_weather(city="Paris", days=2)``: a call as it would read in code (raw text if not an object)."""
    function = call["function"]
    try:
        arguments = json.loads(function["arguments"])
    except json.JSONDecodeError:
        return f"{function['name']}({function['arguments']})"
    if not isinstance(arguments, dict):
        return f"{function['name']}({function['arguments']})"
    shown = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in arguments.items())
    return f"{function['name']}({shown})"


class ReplyPrinter:
    def __init__(self, console: Console, parser: ChatOutputParser):
        self.console = console
        self.parser = parser
        self._last = None  # the kind printed last: a newline separates thinking from the answer
        self._at_line_start = True

    def write(self, text: str) -> None:
        self._print(self.parser.feed(text))

    def flush(self) -> None:
        self.console.file.flush()

    def finish(self) -> None:
        self._print(self.parser.finish())

    def _print(self, delta: ChatDelta) -> None:
        if delta.reasoning_content:
            self._text("reasoning", Text(delta.reasoning_content, style="dim italic"))
        if delta.content:
            self._text("content", Text(delta.content))
        for call in delta.tool_calls:
            self._text("tool", Text("→ ", style="bold cyan") + Text(format_tool_call(call) + "\n", style="cyan"))

    def _text(self, kind: str, text: Text) -> None:
        if self._last not in (None, kind):  # thinking, answer and calls each start on a line of their own
            if not self._at_line_start:
                self.console.print()
            if self._last == "reasoning":
                self.console.print()
        self._last = kind
        self.console.print(text, end="")
        self._at_line_start = text.plain.endswith("\n")

    @property
    def ends_with_newline(self) -> bool:
        return self._at_line_start
