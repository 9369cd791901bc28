"""Request bodies of the OpenAI API (and llama.cpp's extras), validated with pydantic, and their translation
into `SamplingParams`.

The models accept exactly what the official `openai` client sends, plus the common vLLM / llama.cpp sampling
extensions (top_k, min_p, repetition_penalty, ...). Unknown fields are ignored, as vLLM and llama-server do, so
tools that send a few extra keys keep working. Types are strict (a string is never coerced into a number) and
every size is bounded; the bounds that depend on the loaded model (context, vocabulary, sequences) are checked
in `Limits.sampling_params`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..sampling import SamplingParams
from .errors import APIError, bad_request, one_line

MAX_STOP_STRINGS = 16
MAX_STOP_CHARS = 512
MAX_TOP_LOGPROBS = 20  # chat's top_logprobs (OpenAI's bound)
MAX_COMPLETION_LOGPROBS = 20  # completions' logprobs (OpenAI allows 5, vLLM 20)
MAX_PROMPTS = 64  # prompts in one /v1/completions or /v1/embeddings call
MAX_LOGIT_BIAS = 1024  # entries

Probability = Annotated[float, Field(ge=0, le=1)]
Penalty = Annotated[float, Field(ge=-2, le=2)]
TokenId = Annotated[int, Field(ge=0)]
StopStrings = Union[Annotated[str, Field(max_length=MAX_STOP_CHARS)],
                    Annotated[list[Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]],
                              Field(max_length=MAX_STOP_STRINGS)]]
# a prompt: text, token ids, or a list of either (one request per entry)
PromptInput = Union[str, Annotated[list[str], Field(min_length=1, max_length=MAX_PROMPTS)],
                    Annotated[list[TokenId], Field(min_length=1)],
                    Annotated[list[Annotated[list[TokenId], Field(min_length=1)]],
                              Field(min_length=1, max_length=MAX_PROMPTS)]]


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class StreamOptions(_Body):
    include_usage: bool = False


class ContentPart(_Body):
    type: str
    text: str | None = None


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None

    def template_dict(self, index: int) -> dict[str, Any]:
        """The message as chat templates read it: text parts joined into one string (templates concatenate
        strings), "developer" read as "system", tool-call arguments as objects (templates `tojson` them)."""
        if isinstance(self.content, list):
            for part in self.content:
                if part.type != "text" or part.text is None:
                    raise bad_request(f"messages[{index}]: only text content parts are supported, got a "
                                      f"{part.type!r} part", param=f"messages.{index}.content")
            content: str | None = "\n".join(part.text for part in self.content)
        else:
            content = self.content
        if content is None and not self.tool_calls:
            raise bad_request(f"messages[{index}] ({self.role}) needs 'content'", param=f"messages.{index}.content")
        message: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role,
                                   "content": content}
        for key in ("name", "tool_call_id", "reasoning_content"):
            if getattr(self, key) is not None:
                message[key] = getattr(self, key)
        if self.tool_calls:
            message["tool_calls"] = [_template_tool_call(call) for call in self.tool_calls]
        return message


def _template_tool_call(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function")
    if isinstance(function, dict) and isinstance(function.get("arguments"), str):
        try:
            arguments = json.loads(function["arguments"])
        except ValueError:
            return call
        return {**call, "function": {**function, "arguments": arguments}}
    return call


class _Sampling(_Body):
    """Fields every generating endpoint shares."""

    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Field(ge=1)] = 1
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    stop: StopStrings | None = None
    seed: Annotated[int, Field(ge=0, lt=2**63)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: Annotated[dict[str, Annotated[float, Field(ge=-100, le=100)]],
                          Field(max_length=MAX_LOGIT_BIAS)] | None = None
    user: str | None = None
    # vLLM / llama.cpp extensions
    top_k: Annotated[int, Field(ge=-1)] | None = None
    min_p: Probability | None = None
    typical_p: Annotated[float, Field(gt=0, le=1)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0, le=10)] | None = None
    repeat_last_n: Annotated[int, Field(ge=-1)] | None = None
    min_tokens: Annotated[int, Field(ge=0)] | None = None
    ignore_eos: bool = False
    stop_token_ids: Annotated[list[TokenId], Field(max_length=MAX_STOP_STRINGS)] | None = None
    skip_special_tokens: bool = True
    # structured output (llama-server's grammar / json_schema, OpenAI's response_format)
    response_format: dict[str, Any] | None = None
    grammar: str | None = None
    json_schema: dict[str, Any] | None = None

    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class ChatCompletionRequest(_Sampling):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    add_generation_prompt: bool = True

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def logprobs_count(self) -> int | None:
        if self.top_logprobs is not None and not self.logprobs:
            raise bad_request("top_logprobs needs logprobs: true", param="top_logprobs")
        return (self.top_logprobs or 0) if self.logprobs else None

    def template_messages(self) -> list[dict[str, Any]]:
        return [message.template_dict(i) for i, message in enumerate(self.messages)]


class CompletionRequest(_Sampling):
    prompt: PromptInput
    max_tokens: Annotated[int, Field(ge=1)] | None = 16  # OpenAI's default for completions
    logprobs: Annotated[int, Field(ge=0, le=MAX_COMPLETION_LOGPROBS)] | None = None
    echo: bool = False
    suffix: str | None = None
    best_of: Annotated[int, Field(ge=1)] | None = None

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    def logprobs_count(self) -> int | None:
        return self.logprobs


class EmbeddingRequest(_Body):
    model: str | None = None
    input: PromptInput
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1)] | None = None
    user: str | None = None


class TokenizeRequest(_Body):
    """llama.cpp's /tokenize ({"content"}) and vLLM's ({"prompt"} or {"messages"})."""

    content: str | None = None
    prompt: str | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None
    add_special: bool | None = None
    add_special_tokens: bool | None = None
    add_generation_prompt: bool = True
    with_pieces: bool = False


class DetokenizeRequest(_Body):
    tokens: list[TokenId]


def parse_body(model: type[BaseModel], body: bytes):
    """Parse and validate a JSON body; a malformed one becomes a 400 naming the first offending field."""
    try:
        return model.model_validate_json(body)
    except ValidationError as err:
        raise _validation_error(err) from None


def _validation_error(err: ValidationError) -> APIError:
    first = err.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        return bad_request(f"the request body is not valid JSON: {one_line(first['msg'])}")
    if first["type"] == "model_type" and not first["loc"]:
        return bad_request("the request body must be a JSON object")
    # union members each report; the location up to the first union branch name reads best
    loc = [str(part) for part in first["loc"] if not _is_union_branch(part)]
    param = ".".join(loc) or None
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    what = f"'{param}'" if param else "the request body"
    return bad_request(f"invalid value for {what}: {one_line(first['msg'])}{more}", param=param)


def _is_union_branch(part: object) -> bool:
    return isinstance(part, str) and (part.startswith(("list[", "dict[", "function-", "constrained-"))
                                      or part in {"str", "int", "float", "bool", "none"})


@dataclass(frozen=True)
class Limits:
    """What a request may ask of the loaded model."""

    n_ctx: int
    n_vocab: int
    max_n: int  # samples per request (n), at most the engine's sequence slots

    def sampling_params(self, req: ChatCompletionRequest | CompletionRequest, n_prompt: int,
                        **extra: Any) -> SamplingParams:
        """The engine's parameters for `req` with a prompt of n_prompt tokens (`extra`: further fields, e.g.
        structured output). max_tokens is clamped to the room the context leaves (as llama-server does), so a
        client's generous default never fails."""
        if req.n > self.max_n:
            raise bad_request(f"n is {req.n} but this server runs at most {self.max_n} sequences per request "
                              f"(--max-num-seqs)", param="n")
        room = self.n_ctx - n_prompt
        requested = req.requested_max_tokens()
        values: dict[str, Any] = dict(
            n=req.n, max_tokens=room if requested is None else min(requested, room),
            stop=req.stop, seed=req.seed, logprobs=req.logprobs_count(), ignore_eos=req.ignore_eos,
            skip_special_tokens=req.skip_special_tokens,
            logit_bias=self._token_keyed(req.logit_bias, "logit_bias"),
            stop_token_ids=self._checked_ids(req.stop_token_ids or [], "stop_token_ids"))
        for field, name in (("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k"),
                            ("min_p", "min_p"), ("typical_p", "typical_p"),
                            ("repetition_penalty", "repetition_penalty"), ("penalty_last_n", "repeat_last_n"),
                            ("presence_penalty", "presence_penalty"), ("frequency_penalty", "frequency_penalty"),
                            ("min_tokens", "min_tokens")):
            if getattr(req, name) is not None:
                values[field] = getattr(req, name)
        if values.get("min_tokens", 0) > values["max_tokens"]:
            values["min_tokens"] = values["max_tokens"]
        try:
            return SamplingParams(**values, **extra)
        except (TypeError, ValueError) as err:
            raise bad_request(one_line(err)) from None

    def _token_keyed(self, bias: dict[str, float] | None, param: str) -> dict[int, float] | None:
        if bias is None:
            return None
        out = {}
        for key, value in bias.items():
            try:
                token = int(key)
            except ValueError:
                raise bad_request(f"{param} keys must be token ids, got {key!r}", param=param) from None
            out[token] = value
        self._checked_ids(list(out), param)
        return out

    def _checked_ids(self, ids: list[int], param: str) -> list[int]:
        bad = [t for t in ids if not 0 <= t < self.n_vocab]
        if bad:
            raise bad_request(f"{param}: token id {bad[0]} is outside the vocabulary [0, {self.n_vocab})",
                              param=param)
        return ids

    def checked_prompt_ids(self, ids: list[int], param: str = "prompt") -> list[int]:
        return self._checked_ids(ids, param)
