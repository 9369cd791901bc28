"""Separate a reasoning model's thinking (``<think>…</think>``: Qwen3, DeepSeek-R1 distills) from its answer,
incrementally, so streamed deltas split into ``reasoning_content`` and ``content`` as they arrive.

Two ways the thinking starts: the model writes ``<think>`` itself (Qwen3), or the chat template already put it at
the end of the prompt (DeepSeek-R1 distills), so the output starts inside the thinking and only ``</think>``
appears: pass ``in_reasoning=True`` then (`starts_in_reasoning` tells from the prompt). Output that never
opens a think block is all content. Whitespace right after either tag is dropped (templates and models put
newlines there), and so is whitespace right before ``</think>``; a think block cut off by the token limit is all reasoning.
"""

from __future__ import annotations

from .spans import MarkerScanner

THINK_START, THINK_END = "<think>", "</think>"


def starts_in_reasoning(prompt: str, start: str = THINK_START, end: str = THINK_END) -> bool:
    """True when the rendered prompt leaves an open think block for the model to continue."""
    opened = prompt.rfind(start)
    return opened >= 0 and prompt.find(end, opened) < 0 and not prompt[opened + len(start):].strip()


class ReasoningParser:
    """``feed(delta) -> (reasoning, content)``; ``finish() -> (reasoning, content)`` for what was held back."""

    def __init__(self, in_reasoning: bool = False, start: str = THINK_START, end: str = THINK_END):
        self._start, self._end = start, end
        self._state = "reasoning" if in_reasoning else "opening"
        self._scanner = MarkerScanner()
        self._strip_lead = in_reasoning  # drop whitespace at the start of the current part
        self._held = ""  # the reasoning's trailing whitespace

    def feed(self, text: str) -> tuple[str, str]:
        self._scanner.feed(text)
        reasoning, content = [], []
        while True:
            if self._state == "opening":
                pending = self._scanner.pending
                head = pending.lstrip()
                if not head or (self._start.startswith(head) and head != self._start):
                    break  # could still be "<think>"
                if head.startswith(self._start):
                    self._scanner.flush()
                    self._scanner.feed(head[len(self._start):])
                    self._state, self._strip_lead = "reasoning", True
                    continue
                self._state = "content"
            elif self._state == "reasoning":
                before, marker = self._scanner.take((self._end,))
                text = self._held + self._lead(before)
                body = text.rstrip()  # trailing whitespace waits: dropped before </think>
                self._held = "" if marker is not None else text[len(body):]
                reasoning.append(body)
                if marker is None:
                    break
                self._state, self._strip_lead = "content", True
            else:
                content.append(self._lead(self._scanner.flush()))
                break
        return "".join(reasoning), "".join(content)

    def finish(self) -> tuple[str, str]:
        rest = self._lead(self._scanner.flush())
        return (self._held + rest, "") if self._state == "reasoning" else ("", rest)

    def _lead(self, text: str) -> str:
        if self._strip_lead and text:
            text = text.lstrip()
            self._strip_lead = not text
        return text
