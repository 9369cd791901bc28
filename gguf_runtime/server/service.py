"""The loaded model behind the routes: which names it answers to, prompt preparation, admission (a bounded
queue), and the lifetime of one HTTP request's engine requests.

Every generating request goes through `Service.generation`: it refuses work beyond the queue bound before
touching the engine, submits the prompts, and on the way out (finished, client gone, error) aborts whatever
is still running, so the engine frees those KV blocks at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
from starlette.requests import Request

from ..catalog import CATALOG, resolve_model
from ..session import ContextLengthError
from .errors import SERVER_BUSY, SERVER_ERROR, APIError, bad_request, context_length_exceeded, one_line
from .protocol import Limits
from .worker import EngineWorker, RequestStream

T = TypeVar("T")
DEFAULT_MAX_QUEUE = 64  # requests waiting beyond the running ones before the server answers 503


class ClientGone(Exception):
    """The client closed the connection before its response was ready."""


class Service:
    def __init__(self, llm, model_name: str | None, max_queue: int = DEFAULT_MAX_QUEUE, pooling: str = "mean"):
        self.llm = llm
        self.worker = EngineWorker(llm.engine)
        self.limits = Limits(n_ctx=llm.n_ctx, n_vocab=llm.tokenizer.n_vocab, max_n=llm.max_num_seqs)
        self.model_id, self.aliases = _model_names(llm.path, model_name)
        self.max_queue = max_queue
        self.capacity = llm.max_num_seqs + max_queue  # engine requests in flight at most
        self.pooling = pooling
        self.in_flight = 0  # engine requests submitted and not yet finished or aborted
        self.rejected_total = 0
        self.created = int(time.time())
        self.stopping = False

    def start(self) -> None:
        self.worker.start()

    def stop(self) -> None:
        self.stopping = True
        self.worker.stop()

    def begin_shutdown(self, grace_seconds: float) -> None:
        """Refuse new requests (503); those in flight may finish for `grace_seconds`, then are aborted, which
        ends them with a clean "server is shutting down" error. Safe to call from a signal handler."""
        if self.stopping:
            return
        self.stopping = True
        timer = threading.Timer(grace_seconds, self.worker.abort_all)
        timer.daemon = True
        timer.start()

    # ---- request checks -------------------------------------------------------------------------------------

    def check_model(self, name: str | None) -> None:
        """One model is served; a request naming another gets OpenAI's 404 model_not_found."""
        if name is not None and name not in self.aliases:
            raise APIError(404, f"The model {name!r} does not exist: this server serves {self.model_id!r} "
                                f"(see GET /v1/models)", type="invalid_request_error", param="model",
                           code="model_not_found")

    def tokenize_prompt(self, text: str, what: str = "prompt", room: int = 1) -> list[int]:
        """Token ids for prompt text exactly as `LLM.generate` makes them (special tokens parsed, BOS per the
        metadata), refused with OpenAI's context_length_exceeded when no token could be generated after it."""
        ids = self.llm.tokenize(text, add_special=True, parse_special=True)
        return self.check_prompt(ids, what, room)

    def prompt_list(self, prompt, room: int = 1) -> tuple[list[str | None], list[list[int]]]:
        """A request's `prompt` / `input` (text, token ids, or a list of either) as (text or None, token ids)
        per prompt."""
        if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
            prompt = [prompt]
        texts = [p if isinstance(p, str) else None for p in prompt]
        ids = [self.tokenize_prompt(p, room=room) if isinstance(p, str) else self.check_prompt(list(p), room=room)
               for p in prompt]
        return texts, ids

    def check_prompt(self, ids: list[int], what: str = "prompt", room: int = 1) -> list[int]:
        """`ids` if they are tokens of the vocabulary and leave `room` positions of the context free."""
        if not ids:
            raise bad_request(f"the {what} is empty (no tokens)", param=what)
        self.limits.checked_prompt_ids(ids, what)
        if len(ids) + room > self.limits.n_ctx:
            raise context_length_exceeded(len(ids), self.limits.n_ctx, what)
        return ids

    async def in_thread(self, fn, *args) -> Any:
        """Template rendering and tokenizing run off the event loop, so a long prompt does not stall others."""
        return await anyio.to_thread.run_sync(fn, *args)

    # ---- generation -----------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def generation(self, request_id: str, prompts: list[list[int]], params) -> AsyncIterator[RequestStream]:
        """Submit one engine request per prompt; yields their merged stream. Leaving the block aborts what is
        unfinished (client gone, error) and releases the queue places."""
        if self.stopping:
            raise APIError(503, "the server is shutting down", type=SERVER_ERROR, code="server_shutting_down")
        if self.in_flight + len(prompts) > self.capacity:
            self.rejected_total += 1
            raise APIError(503, f"the server is busy: {self.in_flight} requests are running or waiting and the "
                                f"queue holds {self.capacity} (--max-num-seqs {self.limits.max_n} + --max-queue "
                                f"{self.max_queue}); retry shortly", type=SERVER_BUSY, code="server_busy",
                           headers={"Retry-After": "1"})
        self.in_flight += len(prompts)
        stream = RequestStream()
        try:
            for i, ids in enumerate(prompts):
                try:
                    await self.worker.add(stream, f"{request_id}-{i}", ids, params)
                except ContextLengthError:
                    raise context_length_exceeded(len(ids), self.limits.n_ctx) from None
                except ValueError as err:  # the engine's own refusals: bad params, can never fit the KV pool
                    raise bad_request(one_line(err)) from None
            yield stream
        finally:
            for engine_id in stream.unfinished_ids():
                self.worker.abort(engine_id)
            self.in_flight -= len(prompts)


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work` unless the client disconnects first; then cancel it (its `generation` block aborts the
    engine requests) and raise ClientGone. Starlette notices a gone client for streams only."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    raise ClientGone


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _model_names(path: Path, name: str | None) -> tuple[str, frozenset[str]]:
    """The id /v1/models shows (the catalog name or -m as given) and every name a request may use for it."""
    catalog = {n for n in CATALOG if resolve_model(n).resolve() == path.resolve()}
    model_id = name if name is not None else (min(catalog) if catalog else path.name)
    return model_id, frozenset({model_id, path.name, path.stem, str(path), *catalog})
