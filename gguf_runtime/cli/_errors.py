"""Which exceptions are the user's to fix, and the one line that tells them how.

Every deliberate failure subclasses gguf_runtime.errors.UserInputError (that module imports nothing, so
`gguf-runtime --help` does not pay for numba by importing it here).
"""

from __future__ import annotations

import errno

from ..errors import UserInputError


def user_error_for(exc: BaseException) -> str | None:
    """The one-line message for a mistake the user can fix, or None for an unexpected failure (a bug)."""
    if isinstance(exc, UserInputError):
        return _one_line(str(exc))
    if isinstance(exc, OSError) and exc.filename is not None:
        if isinstance(exc, IsADirectoryError):
            return f"{exc.filename} is a directory, not a GGUF file"
        if exc.errno == errno.ENOENT:
            return f"no such file: {exc.filename}"
        return f"cannot open {exc.filename}: {exc.strerror or exc}"
    if isinstance(exc, FileNotFoundError):  # raised with a message of its own (LLM's "model file not found")
        return _one_line(str(exc))
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())
