"""The engine thread: the one place the server touches the engine.

The engine is not thread-safe and its numba kernels use every core, so one dedicated thread owns it. The async
HTTP side never calls it directly: it posts commands (add a request, abort one, run a function such as an
embedding between steps) to a queue guarded by a condition variable. The thread runs the commands, then one
engine step, and hands each request's deltas to the event loop with `loop.call_soon_threadsafe`, where they
land in that request's `asyncio.Queue`. With nothing to do it sleeps on the condition (no busy-waiting).

Deltas are queued, never awaited: a client that reads slowly only lets its own queue grow (bounded by its
max_tokens), it never holds up a step for the others.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("gguf_runtime.server")

RATE_WINDOW_SECONDS = 10.0  # tokens/s is averaged over this much recent time


class EngineFailure(RuntimeError):
    """The engine raised while stepping (a bug): the requests it was running are ended with this."""


class RequestStream:
    """The deltas of one HTTP request's engine requests (several for a list of prompts), in arrival order on
    the event loop. Iterating yields each step's StepOutputs until every sample of every request finished."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[list[Any] | BaseException] = asyncio.Queue()
        self.remaining: dict[str, int] = {}  # engine request id -> its samples not finished yet

    @property
    def finished(self) -> bool:
        return not any(self.remaining.values())

    def unfinished_ids(self) -> list[str]:
        return [request_id for request_id, left in self.remaining.items() if left > 0]

    async def __aiter__(self) -> AsyncIterator[list[Any]]:
        while not self.finished:
            item = await self.queue.get()
            if isinstance(item, BaseException):
                raise item
            for out in item:
                if out.finished:
                    self.remaining[out.request_id] -= 1
            yield item


@dataclass
class Snapshot:
    """What /metrics and /health read: copied by the engine thread after each step (replaced, never mutated)."""

    engine: Any = None  # EngineMetrics
    tokens_per_second: float = 0.0
    steps_total: int = 0
    step_seconds_total: float = 0.0
    alive: bool = True


@dataclass
class _Rate:
    samples: deque = field(default_factory=deque)  # (time, generation_tokens_total)

    def update(self, now: float, total: int) -> float:
        self.samples.append((now, total))
        while len(self.samples) > 2 and now - self.samples[0][0] > RATE_WINDOW_SECONDS:
            self.samples.popleft()
        t0, n0 = self.samples[0]
        return (total - n0) / (now - t0) if now > t0 else 0.0


class EngineWorker:
    """Runs `engine` (the contract's Engine) on its own thread; every public method is safe to call from any
    thread, the `async` ones from the event loop."""

    def __init__(self, engine, name: str = "gguf-runtime-engine"):
        self._engine = engine
        self._cond = threading.Condition()
        self._commands: deque[Callable[[], None]] = deque()
        self._stopping = False
        self._streams: dict[str, RequestStream] = {}  # engine thread only
        self._unfinished: dict[str, int] = {}  # engine thread only: samples of each request still running
        self._rate = _Rate()
        self.snapshot = Snapshot(engine=engine.metrics())
        self._steps = 0
        self._step_seconds = 0.0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # ---- the HTTP side ------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Abort whatever still runs (its clients get a clean error) and end the thread."""
        self._post(None)
        self._thread.join(timeout)

    async def add(self, stream: RequestStream, request_id: str, prompt_ids: list[int], params) -> None:
        """Queue a request in the engine, its deltas going to `stream`; raises what `Engine.add_request`
        raises (before anything changed)."""
        loop = stream.loop
        added: asyncio.Future = loop.create_future()
        stream.remaining[request_id] = params.n

        def command() -> None:
            try:
                self._engine.add_request(request_id, prompt_ids, params)
            except Exception as exc:  # noqa: BLE001 - a refusal travels back to the request that caused it
                loop.call_soon_threadsafe(_settle, added, None, exc, None)
                return
            self._streams[request_id] = stream
            self._unfinished[request_id] = params.n
            loop.call_soon_threadsafe(_settle, added, None, None, lambda: self.abort(request_id))

        self._post(command)
        try:
            await added
        except Exception:
            del stream.remaining[request_id]
            raise

    def abort(self, request_id: str) -> None:
        """Free the request's blocks at once (its stream then ends with finish_reason "abort")."""
        self._post(lambda: self._engine.abort_request(request_id))

    def abort_all(self) -> None:
        """Abort every running request (a shutdown whose grace period ran out)."""
        self._post(lambda: [self._engine.abort_request(request_id) for request_id in list(self._streams)])

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run fn() on the engine thread between two steps (the model is never used by two threads at once)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()

        def command() -> None:
            try:
                result = fn()
            except Exception as exc:  # noqa: BLE001
                loop.call_soon_threadsafe(_settle, done, None, exc, None)
            else:
                loop.call_soon_threadsafe(_settle, done, result, None, None)

        self._post(command)
        return await done

    def _post(self, command: Callable[[], None] | None) -> None:
        with self._cond:
            if command is None:
                self._stopping = True
            else:
                self._commands.append(command)
            self._cond.notify()

    # ---- the engine thread ---------------------------------------------------------------------------------

    def _run(self) -> None:
        busy = False
        while True:
            with self._cond:
                while not self._commands and not busy and not self._stopping:
                    self._cond.wait()
                commands = list(self._commands)
                self._commands.clear()
                stopping = self._stopping
            for command in commands:
                try:
                    command()
                except Exception:  # noqa: BLE001 - a failing command must not end the thread
                    log.exception("engine command failed")
            if stopping:
                self._shut_down()
                return
            busy = self._engine.has_unfinished()
            if busy:
                self._step()
                busy = self._engine.has_unfinished()
            self._take_snapshot()

    def _step(self) -> None:
        t0 = time.perf_counter()
        try:
            outputs = self._engine.step()
        except Exception as exc:  # noqa: BLE001 - a bug in the engine: end its requests, keep serving
            log.exception("engine step failed")
            self._fail_all(EngineFailure(f"the engine failed: {type(exc).__name__}: {exc}"))
            return
        self._steps += 1
        self._step_seconds += time.perf_counter() - t0
        self._deliver(outputs)

    def _deliver(self, outputs: list) -> None:
        batches: dict[str, list] = {}
        for out in outputs:
            batches.setdefault(out.request_id, []).append(out)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[RequestStream, list]]] = {}
        for request_id, batch in batches.items():
            stream = self._streams.get(request_id)
            if stream is None:
                continue
            self._unfinished[request_id] -= sum(1 for out in batch if out.finished)
            if self._unfinished[request_id] <= 0:
                del self._streams[request_id], self._unfinished[request_id]
            by_loop.setdefault(stream.loop, []).append((stream, batch))
        for loop, items in by_loop.items():
            _call_soon(loop, _dispatch, items)

    def _fail_all(self, exc: BaseException) -> None:
        for request_id, stream in list(self._streams.items()):
            try:
                self._engine.abort_request(request_id)
            except Exception:  # noqa: BLE001
                log.exception("abort after an engine failure failed")
            _call_soon(stream.loop, _dispatch, [(stream, exc)])
        self._streams.clear()
        self._unfinished.clear()

    def _shut_down(self) -> None:
        for request_id in list(self._streams):
            self._engine.abort_request(request_id)
        while self._engine.has_unfinished():  # the aborts are reported by the next step
            self._step()
        self._fail_all(EngineFailure("the server is shutting down"))
        self.snapshot = Snapshot(engine=self._engine.metrics(), alive=False)

    def _take_snapshot(self) -> None:
        metrics = self._engine.metrics()
        rate = self._rate.update(time.perf_counter(), metrics.generation_tokens_total)
        self.snapshot = Snapshot(metrics, rate, self._steps, self._step_seconds)


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable, *args) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the loop closed (server stopping): nobody is left to tell
        pass


def _dispatch(items: list[tuple[RequestStream, list | BaseException]]) -> None:
    for stream, batch in items:
        stream.queue.put_nowait(batch)


def _settle(future: asyncio.Future, result: Any, exc: BaseException | None,
            undo: Callable[[], None] | None) -> None:
    """Resolve `future` on its loop; if its waiter already left (client gone), `undo` what was done for it."""
    if future.cancelled():
        if undo is not None:
            undo()
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
