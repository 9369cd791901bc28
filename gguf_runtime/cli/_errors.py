"""Which exceptions are the user's to fix, and the one line that tells them how.

Engine modules are looked up in `sys.modules` rather than imported: an exception can only come from a module
that is already loaded, and `gguf-runtime --help` must not pay for importing numba.
"""

from __future__ import annotations

import errno
import sys

# (module, exception class) pairs whose message is already a complete, one-line explanation.
_SELF_EXPLAINING = (
    ("gguf_runtime.gguf_file", "GGUFError"),  # not a GGUF file, truncated, corrupt
    ("gguf_runtime.config", "ConfigError"),  # unsupported architecture or hyperparameters
    ("gguf_runtime.quants", "UnsupportedQuantError"),  # a tensor type we have no kernel for
    ("gguf_runtime.session", "ContextLengthError"),  # prompt longer than the context
    ("gguf_runtime.chat_template", "ChatTemplateError"),  # template does not compile or rejects messages
    ("gguf_runtime.tokenizer.vocab", "TokenizerError"),  # vocabulary type we cannot tokenize
)


def user_error_for(exc: BaseException) -> str | None:
    """The one-line message for a mistake the user can fix, or None for an unexpected failure (a bug)."""
    for module_name, class_name in _SELF_EXPLAINING:
        cls = getattr(sys.modules.get(module_name), class_name, None)
        if isinstance(cls, type) and isinstance(exc, cls):
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
