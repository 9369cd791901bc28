"""Every exception gguf-runtime raises on purpose, in one dependency-free module."""

from __future__ import annotations


class UserError(Exception):
    """Mixin: the message tells the user what to fix, in one line (the CLI prints it without a traceback)."""


class StructuredOutputError(UserError, ValueError):
    """A JSON schema, grammar or regex for structured output is malformed or unsupported."""
