"""A chat conversation: its messages, the prompt that fits the context, and its JSON file form."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..api import LLM

ROLES = ("system", "user", "assistant", "tool")


class ConversationFileError(ValueError):
    """A /load file that is not a conversation."""


@dataclass
class Prompt:
    text: str  # the rendered conversation (the reply parser reads whether it opened a think block)
    token_ids: list[int]
    n_keep: int  # leading tokens a context shift must keep: the system prompt
    dropped: int  # oldest messages removed so the prompt fits


@dataclass
class Conversation:
    system: str | None = None
    turns: list[dict[str, Any]] = field(default_factory=list)  # user, assistant and tool messages, in order
    tools: list[dict] | None = None  # offered to the model through its template (not saved)
    template_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. enable_thinking (not saved)

    def render(self, llm: LLM, messages: list[dict], add_generation_prompt: bool = True) -> str:
        return llm.render_chat(messages, add_generation_prompt, tools=self.tools, **self.template_kwargs)

    def messages(self) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.turns

    def prompt(self, llm: LLM, reserve: int) -> Prompt:
        """The whole conversation rendered with the chat template, ready for the model's reply.

        The oldest turns are dropped (for good, a user message with its reply) until the prompt leaves
        `reserve` tokens for the reply; the newest message always stays. Raises ContextLengthError, dropping
        nothing, when that message alone (with the system prompt) does not fit.
        """
        from ..errors import ContextLengthError

        newest = _tokenize(llm, self.render(llm, Conversation(self.system, self.turns[-1:]).messages()))
        if len(newest) >= llm.n_ctx:
            raise ContextLengthError(f"the message is {len(newest)} tokens with the chat template but the "
                                     f"context holds {llm.n_ctx} (start with a larger --n-ctx)")
        dropped = 0
        while True:
            text = self.render(llm, self.messages())
            ids = _tokenize(llm, text)
            if len(ids) + reserve <= llm.n_ctx or len(self.turns) <= 1:
                break
            n = 2 if len(self.turns) > 2 and self.turns[1]["role"] == "assistant" else 1
            del self.turns[:n]
            dropped += n
        return Prompt(text, ids, _common_prefix(ids, self._kept_prefix(llm)), dropped)

    def _kept_prefix(self, llm: LLM) -> list[int]:
        """Tokens of the system prompt alone (just BOS without one, or if the template cannot render it)."""
        from ..chat_template import ChatTemplateError

        if self.system:
            try:
                return _tokenize(llm, self.render(llm, self.messages()[:1], add_generation_prompt=False))
            except ChatTemplateError:  # some templates refuse a conversation without a user message
                pass
        return _tokenize(llm, "")

    def to_json(self) -> dict[str, Any]:
        return {"messages": self.messages()}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Conversation:
        """Read `{"messages": [...]}` (or a bare list of messages), OpenAI-style role/content dicts."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ConversationFileError(f"{path} is not JSON: {e}") from None
        messages = data.get("messages") if isinstance(data, dict) else data
        if not isinstance(messages, list):
            raise ConversationFileError(f"{path} has no list of messages")
        for i, m in enumerate(messages):
            calls = isinstance(m, dict) and m.get("role") == "assistant" and isinstance(m.get("tool_calls"), list)
            if not (isinstance(m, dict) and m.get("role") in ROLES
                    and (isinstance(m.get("content"), str) or (calls and m.get("content") is None))):
                raise ConversationFileError(f"{path}: message {i} must be {{'role': one of {', '.join(ROLES)}, "
                                            f"'content': text}}, got {m!r}")
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else None
        kept = ("role", "content", "tool_calls", "tool_call_id")
        turns = [{k: m[k] for k in kept if k in m} for m in messages[1 if system is not None else 0:]]
        if any(m["role"] == "system" for m in turns):
            raise ConversationFileError(f"{path}: a system message may only come first")
        return cls(system, turns)


def _tokenize(llm: LLM, text: str) -> list[int]:
    # as LLM.generate tokenizes a text prompt: BOS per the model, special-token texts parsed
    return llm.tokenize(text, add_special=True, parse_special=True)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
