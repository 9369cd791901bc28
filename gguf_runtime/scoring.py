"""Whole-prompt evaluation outside the engine: embeddings (pooled final hidden states) and the
log-probabilities of a prompt's own tokens (completions' `echo` with `logprobs`).

Both run the prompt once through the model in a private KV cache of their own, so they never take blocks from
the engine's pool or disturb its sequences. Pooling follows llama.cpp's `--pooling`: the hidden states are the
final-normed ones llama.cpp calls `result_norm` (the input of the vocabulary projection); "mean" averages them
over the prompt, "cls" takes the first token's, "last" the last token's; embeddings are then L2-normalised as
llama-server's /v1/embeddings does by default.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .model import Model
from .sampling import sampled_token

POOLINGS = ("mean", "cls", "last")
# llama.cpp's enum llama_pooling_type, as GGUF's `<arch>.pooling_type` stores it
_GGUF_POOLING = {1: "mean", 2: "cls", 3: "last"}


def default_pooling(metadata, arch: str) -> str:
    """The model's own pooling when its GGUF names one (embedding models do), else "mean"."""
    return _GGUF_POOLING.get(metadata.get(f"{arch}.pooling_type"), "mean")


def _rows(model: Model, ids: list[int], what: str, n_batch: int) -> Iterator[np.ndarray]:
    """Per-position outputs of the prompt, a chunk of at most n_batch positions at a time: final hidden
    states (what="hidden", (T, D)) or logits (what="all", (T, V))."""
    cache = model.new_cache(len(ids))
    for start in range(0, len(ids), n_batch):
        yield model.forward(np.asarray(ids[start:start + n_batch]), cache, logits=what)


def embedding(model: Model, ids: list[int], pooling: str = "mean", normalize: bool = True,
              n_batch: int = 256) -> np.ndarray:
    """The pooled (D,) float32 embedding of a prompt."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    if not ids:
        raise ValueError("cannot embed an empty prompt (no tokens)")
    if pooling == "mean":
        total = np.zeros(model.config.n_embd, np.float64)
        for hidden in _rows(model, ids, "hidden", n_batch):
            total += hidden.sum(axis=0, dtype=np.float64)
        vector = (total / len(ids)).astype(np.float32)
    else:
        chunk = ids[:1] if pooling == "cls" else ids  # the first token's state needs nothing after it
        *_, hidden = _rows(model, chunk, "hidden", n_batch)
        vector = hidden[-1].copy()
    if normalize:
        norm = float(np.linalg.norm(vector.astype(np.float64)))
        if norm > 0:
            vector /= norm
    return vector


def prompt_logprobs(model: Model, ids: list[int], n_top: int, n_batch: int = 256
                    ) -> list[tuple[int, float | None, dict[int, float] | None]]:
    """(token id, its log-probability given the tokens before it, the n_top best alternatives) per prompt
    token; the first token has no context, so (id, None, None)."""
    out: list[tuple[int, float | None, dict[int, float] | None]] = [(ids[0], None, None)]
    position = 0
    for logits in _rows(model, ids, "all", n_batch):
        for row in logits:  # row predicts ids[position + 1]
            position += 1
            if position >= len(ids):
                break
            s = sampled_token(ids[position], row, n_top)
            out.append((s.token_id, s.logprob, dict(s.top_logprobs)))
    return out
