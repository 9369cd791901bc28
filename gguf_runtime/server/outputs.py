"""Engine deltas (StepOutput) into OpenAI's response pieces: accumulated choices, usage, log-probabilities,
and the SSE framing both generating endpoints stream with.

Chat and completions differ only in the JSON around a choice; what a choice holds (text, tokens, log-probs,
finish reason) and how usage is counted is written once here.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from .errors import APIError, one_line
from .worker import EngineFailure

FINISH_ABORT = "abort"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


@dataclass
class Choice:
    """One sample's output so far."""

    index: int
    text: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[Any] = field(default_factory=list)  # SampledToken per generated token
    finish_reason: str | None = None


class Usage:
    """Token counts of one HTTP request (all its prompts and samples), as OpenAI's `usage` reports them."""

    def __init__(self) -> None:
        self.prompt: dict[str, tuple[int, int]] = {}  # engine request id -> (prompt tokens, cached)
        self.completion: dict[tuple[str, int], int] = {}  # (request id, sample) -> tokens generated

    def add(self, out) -> None:
        self.prompt[out.request_id] = (out.prompt_tokens, out.cached_tokens)
        self.completion[(out.request_id, out.index)] = out.completion_tokens

    def body(self) -> dict[str, Any]:
        prompt = sum(p for p, _ in self.prompt.values())
        completion = sum(self.completion.values())
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": sum(c for _, c in self.prompt.values())}}


def finish_reason(out) -> str | None:
    """OpenAI's finish reason for a finished delta; an aborted one (server shutting down) is an error."""
    if out.finish_reason == FINISH_ABORT:
        raise APIError(503, "the request was aborted: the server is shutting down", type="server_error",
                       code="server_shutting_down")
    return out.finish_reason


def add_to(choice: Choice, out) -> None:
    choice.text.append(out.new_text)
    choice.token_ids.extend(out.new_token_ids)
    if out.new_logprobs:
        choice.logprobs.extend(out.new_logprobs)
    if out.finished:
        choice.finish_reason = finish_reason(out)


class TokenText:
    """Token ids as the text and bytes OpenAI's log-probability entries show."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer

    def bytes(self, token_id: int) -> bytes:
        return self._tokenizer.token_bytes(token_id)

    def text(self, token_id: int) -> str:
        return self.bytes(token_id).decode("utf-8", errors="replace")

    def chat_entry(self, token_id: int, logprob: float) -> dict[str, Any]:
        return {"token": self.text(token_id), "logprob": logprob, "bytes": list(self.bytes(token_id))}

    def chat_logprobs(self, sampled: list[Any]) -> dict[str, Any]:
        """Chat's `logprobs`: {"content": [{token, logprob, bytes, top_logprobs: [...]}, ...]}."""
        return {"content": [{**self.chat_entry(s.token_id, s.logprob),
                             "top_logprobs": [self.chat_entry(t, lp) for t, lp in s.top_logprobs or ()]}
                            for s in sampled], "refusal": None}

    def completion_logprobs(self, sampled: list[Any], text_offset: int = 0,
                            prompt: list[tuple[int, float | None, dict[int, float] | None]] = ()) -> dict[str, Any]:
        """Completions' `logprobs`: parallel lists tokens / token_logprobs / top_logprobs / text_offset.
        `prompt` holds echoed prompt tokens first (the very first has no log-probability)."""
        rows = [*prompt, *((s.token_id, s.logprob, dict(s.top_logprobs or ())) for s in sampled)]
        tokens, offsets, offset = [], [], text_offset
        for token_id, _, _ in rows:
            piece = self.text(token_id)
            tokens.append(piece)
            offsets.append(offset)
            offset += len(piece)
        return {"tokens": tokens, "token_logprobs": [lp for _, lp, _ in rows],
                "top_logprobs": [None if top is None else {self.text(t): lp for t, lp in top.items()}
                                 for _, _, top in rows],
                "text_offset": offsets}


async def sse(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """Server-sent events as OpenAI streams them: one `data: {json}` per event, then `data: [DONE]`. A failure
    after the response started can only be reported in-band: an `{"error": ...}` event, which the official
    clients raise as an APIError."""
    try:
        async for event in events:
            yield b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\n\n"
    except APIError as err:
        yield b"data: " + json.dumps(err.body()).encode() + b"\n\n"
    except EngineFailure as err:
        body = APIError(500, one_line(err), type="server_error").body()
        yield b"data: " + json.dumps(body).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"
