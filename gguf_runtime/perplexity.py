"""Perplexity the way llama.cpp's `llama-perplexity` measures it (numpy only, so fixture scripts share it).

The text's tokens are cut into chunks of n_ctx; each chunk's first token is replaced by BOS (when the model
adds one) and the chunk is evaluated from an empty context; only the second half of each chunk is scored, so
every scored token sees at least n_ctx/2 tokens of context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np


@dataclass(frozen=True)
class PerplexityResult:
    ppl: float
    chunks: int
    scored_tokens: int
    nll: float  # mean negative log-likelihood per scored token


def perplexity(tokens: Sequence[int], n_ctx: int, logits_of: Callable[[list[int]], np.ndarray],
               bos_id: int | None, max_chunks: int | None = None) -> PerplexityResult:
    """logits_of(chunk) must return float logits (len(chunk), n_vocab) from a fresh context."""
    n_chunks = len(tokens) // n_ctx
    if max_chunks is not None:
        n_chunks = min(n_chunks, max_chunks)
    if n_chunks == 0:
        raise ValueError(f"the text has {len(tokens)} tokens; perplexity needs at least n_ctx = {n_ctx}")
    first = n_ctx // 2
    total, count = 0.0, 0
    for c in range(n_chunks):
        chunk = list(tokens[c * n_ctx:(c + 1) * n_ctx])
        if bos_id is not None:
            chunk[0] = bos_id
        logits = np.asarray(logits_of(chunk), dtype=np.float64)[first:n_ctx - 1]  # predicts chunk[first+1:]
        peak = logits.max(axis=1, keepdims=True)
        log_z = peak[:, 0] + np.log(np.exp(logits - peak).sum(axis=1))
        targets = np.asarray(chunk[first + 1:])
        total += float((log_z - logits[np.arange(len(targets)), targets]).sum())
        count += len(targets)
    nll = total / count
    return PerplexityResult(math.exp(nll), n_chunks, count, nll)
