"""Print a generation as it streams, with a spinner until the first text and a gentle Ctrl-C.

Ctrl-C while text streams stops the generation at the next token: the generator is closed between tokens, so
the conversation cache keeps what was computed and the next prompt reuses it. A second Ctrl-C (say, during a long
prompt evaluation) interrupts at once with KeyboardInterrupt; the cache state is then unknown.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generator, Iterator, TextIO

from ._load import status

if TYPE_CHECKING:
    from ..engine import Generation


@dataclass
class Streamed:
    text: str  # everything printed
    generation: Generation | None  # None when stopped early
    first_text_at: float | None  # time.perf_counter() when the first text arrived
    interrupted: bool  # stopped by Ctrl-C
    clean: bool = True  # False: stopped inside the model (second Ctrl-C), the cache may not match its tokens


@contextlib.contextmanager
def soft_interrupt() -> Iterator[list[bool]]:
    """While active, the first SIGINT only appends to the yielded list; the next raises KeyboardInterrupt."""
    hits: list[bool] = []
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
        yield hits
        return

    def on_sigint(signum, frame):
        if hits:
            raise KeyboardInterrupt
        hits.append(True)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield hits
    finally:
        signal.signal(signal.SIGINT, previous)


def stream_to(out: TextIO, gen: Generator[str, None, Generation], waiting: str) -> Streamed:
    """Write each text delta of a `generate()` generator to `out` as it comes (a spinner saying `waiting`
    until the first); stop early on Ctrl-C."""
    parts: list[str] = []
    generation = first_text_at = None
    clean = True
    with soft_interrupt() as interrupts, contextlib.ExitStack() as spinner:
        spinner.enter_context(status(waiting))
        try:
            while True:
                try:
                    delta = next(gen)
                except StopIteration as done:
                    generation = done.value
                    break
                if first_text_at is None:
                    first_text_at = time.perf_counter()
                    spinner.close()
                parts.append(delta)
                out.write(delta)
                out.flush()
                if interrupts:
                    gen.close()
                    break
        except KeyboardInterrupt:
            clean = False
    return Streamed("".join(parts), generation, first_text_at, interrupted=generation is None, clean=clean)


def stats_fields(generation: Generation) -> dict[str, float | int]:
    """A generation's counts, times and speeds as JSON-ready numbers."""
    s = generation.stats
    return {"prompt_tokens": s.prompt_tokens, "reused_tokens": s.reused_tokens,
            "generated_tokens": s.generated_tokens, "prefill_seconds": round(s.prefill_seconds, 4),
            "decode_seconds": round(s.decode_seconds, 4),
            "prompt_tokens_per_second": round(s.prefill_tokens_per_second, 2),
            "decode_tokens_per_second": round(s.decode_tokens_per_second, 2)}


def stats_line(generation: Generation) -> str:
    """One human line: prompt evaluation and decoding speed."""
    s = generation.stats
    reused = f", {s.reused_tokens} reused" if s.reused_tokens else ""
    return (f"prompt: {s.prompt_tokens} tokens{reused} in {s.prefill_seconds:.2f} s "
            f"({s.prefill_tokens_per_second:.1f} tok/s) | decode: {s.generated_tokens} tokens in "
            f"{s.decode_seconds:.2f} s ({s.decode_tokens_per_second:.1f} tok/s)" + _spec_part(s.speculative))


def _spec_part(spec) -> str:
    if spec is None or not spec.target_passes:
        return ""
    return (f" | speculative: {spec.accepted}/{spec.drafted} drafts accepted ({spec.acceptance_rate:.0%}), "
            f"{spec.tokens_per_pass:.2f} tokens per target pass"
            + (f", paused {spec.paused}x (slower than plain steps)" if spec.paused else ""))
