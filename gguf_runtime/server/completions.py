"""POST /v1/completions: raw prompts (a string, token ids, or a list of either) continued by the engine.

Each prompt of a list is its own engine request, so they decode together; choice `index` is
prompt_number * n + sample, as OpenAI numbers them. `echo` puts the prompt in front of the text (and, with
`logprobs`, the prompt tokens' log-probabilities in front of the generated ones; the first has none).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ..scoring import prompt_logprobs
from .errors import bad_request
from .outputs import Choice, TokenText, Usage, add_to, finish_reason, new_id, now, sse
from .protocol import CompletionRequest, parse_body
from .service import Service, until_disconnect
from .structured import structured_hook


async def completions(request: Request) -> Response:
    service: Service = request.app.state.service
    req = parse_body(CompletionRequest, await request.body())
    service.check_model(req.model)
    if req.suffix:
        raise bad_request("suffix (fill-in-the-middle) is not supported", param="suffix")
    if req.best_of is not None and req.best_of != req.n:
        raise bad_request("best_of other than n is not supported", param="best_of")
    structured = structured_hook(req)
    texts, prompts = await service.in_thread(service.prompt_list, req.prompt)
    params = service.limits.sampling_params(req, max(len(ids) for ids in prompts), **structured)
    request_id = new_id("cmpl")
    tokens = TokenText(service.llm.tokenizer)
    echoes = await _echoes(service, req, texts, prompts) if req.echo else None
    head = {"id": request_id, "object": "text_completion", "created": now(), "model": service.model_id,
            "system_fingerprint": None}
    job = _Job(service, req, request_id, prompts, params, tokens, echoes)
    if req.stream:
        return StreamingResponse(sse(job.chunks(head)), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    return JSONResponse(await until_disconnect(request, job.complete(head)))


class _Echo:
    def __init__(self, text: str, logprobs: list | None):
        self.text = text
        self.logprobs = logprobs  # (token id, logprob or None, top dict or None) per prompt token


async def _echoes(service: Service, req: CompletionRequest, texts: list[str | None],
                  prompts: list[list[int]]) -> list[_Echo]:
    out = []
    for text, ids in zip(texts, prompts):
        if text is None:
            text = service.llm.detokenize(ids)
        logprobs = None
        if req.logprobs is not None:  # the model runs once more over the prompt, between engine steps
            llm = service.llm
            logprobs = await service.worker.call(lambda ids=ids: prompt_logprobs(llm.model, ids, req.logprobs,
                                                                                 llm.n_batch))
        out.append(_Echo(text, logprobs))
    return out


class _Job:
    def __init__(self, service: Service, req: CompletionRequest, request_id: str, prompts: list[list[int]],
                 params, tokens: TokenText, echoes: list[_Echo] | None):
        self.service, self.req, self.request_id, self.prompts = service, req, request_id, prompts
        self.params, self.tokens, self.echoes = params, tokens, echoes
        self.prompt_of = {f"{request_id}-{i}": i for i in range(len(prompts))}

    def index(self, out) -> int:
        return self.prompt_of[out.request_id] * self.req.n + out.index

    def logprobs(self, sampled: list, prompt_index: int, first: bool, text_offset: int) -> dict[str, Any] | None:
        if self.params.logprobs is None:
            return None
        echo = self.echoes[prompt_index] if self.echoes is not None and first else None
        return self.tokens.completion_logprobs(sampled, text_offset,
                                               prompt=echo.logprobs if echo and echo.logprobs else ())

    def echo_text(self, prompt_index: int) -> str:
        return self.echoes[prompt_index].text if self.echoes is not None else ""

    async def complete(self, head: dict[str, Any]) -> dict[str, Any]:
        choices = [Choice(i) for i in range(len(self.prompts) * self.req.n)]
        usage = Usage()
        async with self.service.generation(self.request_id, self.prompts, self.params) as stream:
            async for batch in stream:
                for out in batch:
                    add_to(choices[self.index(out)], out)
                    usage.add(out)
        body = []
        for c in choices:
            p = c.index // self.req.n
            echo = self.echo_text(p)
            body.append({"index": c.index, "text": echo + "".join(c.text),
                         "logprobs": self.logprobs(c.logprobs, p, True, 0), "finish_reason": c.finish_reason})
        return {**head, "choices": body, "usage": usage.body()}

    async def chunks(self, head: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        include_usage = self.req.include_usage()
        if include_usage:
            head = {**head, "usage": None}
        usage = Usage()
        offsets: dict[int, int] = {}  # choice -> characters streamed so far (text_offset)

        def chunk(index: int, text: str, logprobs=None, reason: str | None = None) -> dict[str, Any]:
            offsets[index] = offsets.get(index, 0) + len(text)
            return {**head, "choices": [{"index": index, "text": text, "logprobs": logprobs,
                                         "finish_reason": reason}]}

        async with self.service.generation(self.request_id, self.prompts, self.params) as stream:
            async for batch in stream:
                for out in batch:
                    usage.add(out)
                    index, p = self.index(out), self.prompt_of[out.request_id]
                    first = index not in offsets
                    text = (self.echo_text(p) if first else "") + out.new_text
                    logprobs = self.logprobs(out.new_logprobs or [], p, first, offsets.get(index, 0))
                    reason = finish_reason(out) if out.finished else None
                    if text or reason or (logprobs and logprobs["tokens"]):
                        yield chunk(index, text, logprobs, reason)
        if include_usage:
            yield {**head, "choices": [], "usage": usage.body()}
