"""The fused decode path (gguf_runtime/fused.py) against the layer-by-layer one, bit for bit.

Both paths must compute every value with the same functions in the same order, so logits are identical,
not close: decode steps of one sequence, a batched step of several sequences at different positions, and
speculative-verify rows (several tokens per sequence), for every dense architecture, weight type and KV-cache
type, at one and at two threads, on tiny models and on the real files.
"""

from __future__ import annotations

import numpy as np
import pytest

from gguf_runtime.api import LLM
from gguf_runtime.fused import MAX_ROWS
from gguf_runtime.sync import concurrent_layer
from tiny_model import ARCH_CASES, write_tiny_model

DENSE = sorted(name for name, case in ARCH_CASES.items() if not case.get("n_expert"))


def _steps(llm: LLM, fused: bool) -> list[np.ndarray]:
    """Logits of: a 20-token prompt, 6 decode steps, 3 sequences decoding together (positions differ), then
    verify rows of 4 tokens on each. The same token choices in both modes (greedy over the logits)."""
    runner, model = llm.engine.runner, llm.engine.runner.model
    model.fused.eligible = fused
    model.fused.max_rows = MAX_ROWS  # (the batched and verify steps below take this path too)
    vocab = model.n_vocab
    rng = np.random.default_rng(3)
    seqs = [llm.engine.kv.new_sequence() for _ in range(3)]
    out = []
    try:
        for j, kv in enumerate(seqs):
            out.append(runner.evaluate(kv, rng.integers(1, vocab, 20 + 5 * j).tolist()))
        tok = int(np.argmax(out[0]))
        for _ in range(6):
            out.append(runner.forward(seqs[:1], [[tok]]))
            tok = int(np.argmax(out[-1][0]))
        toks = [[int(t)] for t in rng.integers(1, vocab, 3)]
        for _ in range(3):
            out.append(runner.forward(seqs, toks))
            toks = [[int(np.argmax(row))] for row in out[-1]]
        out.append(runner.forward(seqs, [rng.integers(1, vocab, 4).tolist() for _ in seqs], "all"))
    finally:
        for kv in seqs:
            kv.release()
    return out


def _assert_paths_equal(llm: LLM) -> None:
    llm.logits([1, 2, 3])  # a first parallel launch: numba picks its threading layer
    assert concurrent_layer() or llm.engine.runner.n_threads == 1
    assert llm.engine.runner.model.fused.serves(1, True, llm.engine.runner.n_threads)
    fused, by_layer = _steps(llm, True), _steps(llm, False)
    for i, (a, b) in enumerate(zip(fused, by_layer)):
        assert np.array_equal(a, b), f"step {i}: max |diff| {np.abs(a - b).max()}"


# Every dense architecture with the default cache; the quantized and half caches (their own attention code)
# on the models with the most features (soft-caps, sliding windows, post-norms, GeGLU; QK-norm).
CASES = [(name, "f32") for name in DENSE] + [(name, kv) for name in ("gemma2-q8_0", "qwen3-q8_0")
                                              for kv in ("f16", "q8_0")]


@pytest.mark.parametrize("name, kv", CASES)
def test_tiny_models(name, kv, tmp_path):
    path = write_tiny_model(tmp_path / f"{name}.gguf", **ARCH_CASES[name])
    for threads in (1, 2):
        _assert_paths_equal(LLM(path, n_ctx=128, kv_cache_dtype=kv, n_threads=threads))


@pytest.mark.parametrize("which", ["smollm2_path", "gemma_path"])
def test_real_models(which, request):
    _assert_paths_equal(LLM(request.getfixturevalue(which), n_ctx=256, n_threads=2))


def test_moe_layers_take_the_layer_by_layer_path(tmp_path):
    name = next(n for n, c in ARCH_CASES.items() if c.get("n_expert"))
    llm = LLM(write_tiny_model(tmp_path / "moe.gguf", **ARCH_CASES[name]), n_ctx=64)
    assert not llm.engine.runner.model.fused.serves(1, True, 1)


def test_other_cache_types_take_the_layer_by_layer_path(smollm2_path):
    llm = LLM(smollm2_path, n_ctx=64, kv_cache_dtype="q4_0")
    llm.logits([1, 2, 3])
    fused = llm.engine.runner.model.fused
    assert fused.serves(1, True, 1) and not fused.serves(1, True, 1, llm.engine.kv.pool.code)
