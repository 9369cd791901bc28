"""Loading a model for a command: catalog lookup, a spinner on stderr while numba and the file load."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ..catalog import CATALOG, resolve_model
from ._app import UserError
from ._errors import user_error_for

if TYPE_CHECKING:
    from ..api import LLM

THINKING = "thinking ..."

# The CLI modules are imported as the process starts, so this is "command start" for time-to-first-token.
COMMAND_START = time.perf_counter()


@contextlib.contextmanager
def status(message: str) -> Iterator[None]:
    """A transient rich spinner on stderr, only when stderr is a terminal (never in pipes, logs or tests)."""
    if not _may_be_interactive():
        yield  # rich would decide the same; importing it costs ~50 ms of start-up
        return
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_interactive:  # not a terminal, or TERM=dumb
        yield
        return
    with console.status(message, spinner="dots"):
        yield


def _may_be_interactive() -> bool:
    """False when rich certainly sees no interactive terminal on stderr (the variables are those rich reads)."""
    env = os.environ
    return (sys.stderr.isatty() or env.get("TTY_COMPATIBLE") == "1" or env.get("TTY_INTERACTIVE") == "1"
            or bool(env.get("FORCE_COLOR")))


def load_llm(model: str, n_ctx: int, threads: int | None, kv_type: str = "f32", **speculative) -> LLM:
    """The model `model` (catalog name or path), with one-line errors for the usual mistakes.
    `speculative` holds LLM()'s draft_model/speculative/draft_* arguments."""
    path = _existing(model)
    if speculative.get("draft_model"):
        speculative["draft_model"] = str(_existing(speculative["draft_model"]))
    with status(f"loading {path.name} ..."):
        from ..api import LLM  # imports numba: inside the spinner, and never for `--help`

        try:
            return LLM(model=str(path), n_ctx=n_ctx, n_threads=threads, kv_cache_dtype=kv_type, **speculative)
        except ValueError as e:  # LLM refuses its arguments (e.g. more threads than cores) or the file
            raise UserError(user_error_for(e) or str(e)) from e


def _existing(model: str) -> Path:
    path = resolve_model(model)
    if model in CATALOG and not path.is_file():
        raise UserError(f"model {model!r} is not fetched yet; run `gguf-runtime pull {model}`")
    with open(path, "rb"):  # missing, a directory, unreadable: the OSError is reported before the slow import
        pass
    return path


def first_wait_message() -> str:
    """What the spinner says until the first token: on a cold numba cache, the kernels compile first."""
    from ..quants import cachedir

    cache = cachedir.package_cache_dirs(Path(os.environ.get("NUMBA_CACHE_DIR", "")))[0]
    compiled = cache.is_dir() and any(cache.glob("*.nbi"))
    return THINKING if compiled else "compiling kernels (first run only, about a minute) ..."
