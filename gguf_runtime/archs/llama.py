"""Llama (and Mistral, SmolLM, ...): the reference block every field of Architecture defaults to."""

from .base import Architecture

ARCH = Architecture(name="llama")
