"""Every exception gguf-runtime raises on purpose, in one dependency-free module.

One class per condition, so callers (the CLI, the server) can catch a condition without importing the
machinery that raises it: this module imports nothing, and `gguf-runtime --help` can load it without numba.
Each subclasses the built-in exception a caller would already expect (ValueError for bad input), so code
written against those keeps working. `UserInputError` marks the ones whose message is a complete one-line
explanation for the person who made the mistake; anything else escaping is a bug.
"""

from __future__ import annotations


class UserInputError(Exception):
    """Mixin: the message tells the user what to fix, in one line (the CLI prints it without a traceback)."""


class GGUFError(UserInputError, ValueError):
    """Not a GGUF file, or a truncated, corrupt or hostile one."""


class ConfigError(UserInputError, ValueError):
    """An unsupported architecture or implausible hyperparameters in the file's metadata."""


class UnsupportedQuantError(UserInputError, ValueError):
    """A tensor type there is no kernel for."""


class TokenizerError(UserInputError, ValueError):
    """A vocabulary type that cannot be tokenized."""


class ChatTemplateError(UserInputError, ValueError):
    """The chat template does not compile, or it rejects the messages."""


class ContextLengthError(UserInputError, ValueError):
    """The tokens do not fit the context window (a prompt too long, or a context full with shifting off)."""


class KVCapacityError(UserInputError, MemoryError):
    """A request can never fit the KV pool, even alone (raise kv_cache_tokens or lower max_tokens / n)."""


class PoolFullError(Exception):
    """The KV pool has no free block left (admission control keeps this from happening to a request)."""


class VocabMismatchError(UserInputError, ValueError):
    """The draft model's vocabulary is not the target's."""


class StateFileError(UserInputError, ValueError):
    """A saved KV state file cannot be used with this model and context."""


class StructuredOutputError(UserInputError, ValueError):
    """A JSON schema, grammar or regex for structured output is malformed or unsupported."""


class FetchError(UserInputError, Exception):
    """A model could not be downloaded."""

