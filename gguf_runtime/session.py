"""The old home of ContextLengthError (the single-sequence Session is gone: the engine runs every sequence).
Re-exported for this wave; import it from gguf_runtime.errors."""

from .errors import ContextLengthError  # noqa: F401
