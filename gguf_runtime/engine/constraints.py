"""The seam for structured output: a per-sequence constraint the engine consults around every sampled token.

The engine calls, for each sequence that carries one: `mask` on the logits before sampling (disallowed
tokens to -inf, in place), `accept` with the token sampled (and with each accepted draft), `is_terminated`
after accepting (the grammar is complete: the sequence finishes with "stop"), and `fork` for the n > 1
samples of one prompt. With speculative decoding, drafts are first cut to `valid_prefix`, and each verify
row is masked in order as if its drafts had been accepted.

`build_constraint` is called by `Engine.add_request` before anything is queued, so a malformed schema or
grammar raises StructuredOutputError and changes nothing. `SamplingParams.structured_outputs` asks for one;
structured/grammar.py implements the protocol with llguidance.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..sampling import SamplingParams


class Constraint(Protocol):
    def mask(self, logits: np.ndarray) -> None:
        """In place: disallowed tokens -> -inf, before sampling."""

    def accept(self, token_id: int) -> None:
        """The token was sampled (or a draft accepted): advance the grammar."""

    def is_terminated(self) -> bool:
        """The grammar is complete: the engine finishes the sequence with "stop"."""

    def fork(self) -> "Constraint":
        """An independent copy in the same state (n > 1 samples of one prompt)."""

    def valid_prefix(self, token_ids: list[int]) -> int:
        """How many leading tokens of token_ids the grammar allows from the current state."""


def build_constraint(params: SamplingParams, tokenizer) -> Constraint | None:
    """The constraint params ask for, compiled (llguidance, structured/grammar.py); None when they ask for
    none. Raises StructuredOutputError for a malformed or unsupported schema, regex or grammar."""
    if params.structured_outputs is None:
        return None
    from ..structured.grammar import compile_grammar  # llguidance loads only for requests that use it

    return compile_grammar(params.structured_outputs, tokenizer).constraint()
