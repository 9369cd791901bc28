"""The model runner: rows of sequences in, logits out. The engine's only way to run a model.

The engine decides what runs (a prefill chunk, decode rows, draft/verify rows); the runner turns that into a
batch description (kv/batch.py: blocks prepared, every row's position, block and slot), runs the model's
forward pass over it and records the tokens in the sequences. A test drives the engine with a runner whose
`forward` returns made-up logits, so the scheduler is tested without a model.
"""

from __future__ import annotations

import numpy as np

from ..kv import ForwardBatch, KVCache
from ..quants import set_threads


class ModelRunner:
    """Runs one model over sequences of one KV pool."""

    def __init__(self, model, n_batch: int = 256, n_threads: int | None = None):
        """n_threads: kernel threads for this runner's passes (set before each: numba's count is per Python
        thread and process-wide per thread, so two LLMs in one process each get their own); None leaves it."""
        if n_batch < 1:
            raise ValueError(f"n_batch must be at least 1, got {n_batch}")
        self.model = model
        self.n_batch = n_batch
        self.n_vocab = model.n_vocab
        self.n_threads = n_threads
        self.tokens_evaluated = 0  # lifetime count of rows run through the model

    def forward(self, sequences: list[KVCache], token_lists: list,
                logits: str | list[int] | None = "last") -> np.ndarray | None:
        """Append each sequence's tokens in one forward pass; logits as Model.forward returns them (a copy:
        kernels may reuse their output buffers). logits may also say, per sequence, how many of its last
        rows' logits it wants (0 for none): those rows, in order, (sum, V)."""
        batch = ForwardBatch.build(sequences, token_lists)
        if self.n_threads is not None:
            set_threads(self.n_threads)
        if not isinstance(logits, (str, type(None))):
            logits = wanted_rows(batch.runs, logits)
        out = self.model.forward(batch, logits)
        batch.commit()
        self.tokens_evaluated += len(batch.tokens)
        return None if out is None else np.array(out, copy=True)

    def shift_keys(self, layer: int, keys: np.ndarray, delta: int, n_ctx: int) -> None:
        """Re-rotate one layer's cached keys by delta positions (the context shift)."""
        self.model.shift_keys(layer, keys, delta, n_ctx)

    def evaluate(self, kv: KVCache, tokens, all_logits: bool = False) -> np.ndarray:
        """Append tokens to one sequence in chunks of n_batch; the last token's logits (1, V), or with
        all_logits every new position's (n, V)."""
        outs = []
        for s in range(0, len(tokens), self.n_batch):
            chunk = np.asarray(tokens[s:s + self.n_batch], dtype=np.int64)
            last = s + self.n_batch >= len(tokens)
            out = self.forward([kv], [chunk], "all" if all_logits else ("last" if last else None))
            if out is not None:
                outs.append(out)
        return outs[0] if len(outs) == 1 else np.concatenate(outs)


def wanted_rows(runs: list[int], wanted: list[int]) -> str | np.ndarray | None:
    """The rows of a pass whose logits are wanted, as Model.forward takes them: the last `wanted[b]` rows of
    each sequence b (with runs[b] rows). "last" or "all" where that is what it comes to, None for none."""
    if len(wanted) != len(runs) or any(not 0 <= w <= n for w, n in zip(wanted, runs)):
        raise ValueError(f"logits wanted {wanted} do not fit rows per sequence {runs}")
    if all(w == 1 for w in wanted):
        return "last"
    if list(wanted) == list(runs):
        return "all"
    if not any(wanted):
        return None
    ends = np.cumsum(runs)
    return np.concatenate([np.arange(end - w, end) for end, w in zip(ends, wanted)])
