"""Sliding-window layers hold only their windows (llama.cpp's iSWA cache): the pool shrinks to what the windows
need, and everything the engine does gives exactly what full storage (`swa_full=True`, llama.cpp's --swa-full)
gives: long generations, n > 1 forks, context shifts that keep positions a later window reads, prefix reuse,
saved states."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gguf_runtime.api import LLM
from gguf_runtime.errors import ContextLengthError, KVCacheSizeError, StateFileError
from gguf_runtime.kv import pool as pool_module
from gguf_runtime.sampling import SamplingParams
from tiny_model import ARCH_CASES, write_tiny_model

IDS = np.random.default_rng(0).integers(1, 150, 95).tolist()


@pytest.fixture(scope="module", params=["gemma3-q8_0", "gemma2-f32"])
def tiny(request, tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("swa") / f"{request.param}.gguf", **ARCH_CASES[request.param])


def _pair(path: Path, **kw) -> tuple[LLM, LLM]:
    """Full storage and window storage of one model (window 8, passes of at most 8 rows per sequence)."""
    args = dict(n_ctx=96, n_batch=8, max_num_seqs=2, kv_cache_dtype="f16", kv_cache_tokens=400) | kw
    return LLM(path, swa_full=True, **args), LLM(path, **args)


def _run(llm: LLM, prompts, n_keep: int = 0, **params) -> tuple[dict, dict]:
    """Every sample's tokens, by (request, index), and each request's cached prompt tokens; the pool is
    empty again afterwards."""
    for i, prompt in enumerate(prompts):
        llm.engine.add_request(f"r{i}", prompt, SamplingParams(**params), n_keep=n_keep)
    out, cached = {}, {}
    while llm.engine.has_unfinished():
        for step in llm.engine.step():
            out.setdefault((step.request_id, step.index), []).extend(step.new_token_ids)
            cached[step.request_id] = step.cached_tokens
    assert llm.engine.metrics().kv_blocks_used == 0
    return out, cached


def test_windows_only_hold_what_they_read_and_give_full_storage_results(tiny):
    full, swa = _pair(tiny)
    assert [g.window for g in full.engine.kv.pool.groups] == [0]
    assert [(g.window, g.n_blocks) for g in swa.engine.kv.pool.groups] == [(0, 14), (8, 4)]
    np.testing.assert_array_equal(swa.logits(IDS[:60]), full.logits(IDS[:60]))
    cases = [
        ([IDS[:9]], 0, dict(temperature=0, max_tokens=80)),  # 10x the window
        ([IDS[:20], IDS[5:40]], 0, dict(temperature=0, max_tokens=50)),  # two sequences in one pass
        ([IDS[:30]], 0, dict(temperature=1.0, n=2, seed=3, max_tokens=60)),  # a fork: copy-on-write tails
        ([IDS[:40]], 5, dict(temperature=0, max_tokens=200)),  # context shifts
        ([IDS[:40]], 0, dict(temperature=0.8, seed=1, n=2, max_tokens=150)),  # forked samples shifting
        # after a shift of 4 positions the window of the next query reaches 3 of the 88 kept ones: the
        # sliding layers held on to them
        ([IDS[:90]], 88, dict(temperature=0, max_tokens=60)),
        ([IDS[:80]], 70, dict(temperature=0.7, seed=2, n=2, max_tokens=90)),
    ]
    for prompts, n_keep, params in cases:
        assert _run(swa, prompts, n_keep, **params)[0] == _run(full, prompts, n_keep, **params)[0], (n_keep, params)


def test_a_prefix_is_reused_only_while_its_window_is_cached(tiny):
    full, swa = _pair(tiny)
    greedy = dict(temperature=0, max_tokens=10)
    for llm in (full, swa):
        _run(llm, [IDS[:60]], **greedy)
    (again, cached), (again_full, _) = _run(swa, [IDS[:60]], **greedy), _run(full, [IDS[:60]], **greedy)
    assert again == again_full and cached["r0"] == 59  # the window's blocks were still cached
    # one more sequence takes again the blocks it let go of (those of the prefix stay cached), two together
    # take all 4 of the sliding pool: the prefix's window is evicted, so the prompt is recomputed, where
    # full storage still has every block
    assert _run(swa, [IDS[30:95]], **greedy)[0] == _run(full, [IDS[30:95]], **greedy)[0]
    assert _run(swa, [IDS[:60]], **greedy)[1]["r0"] == 59
    for llm in (full, swa):
        _run(llm, [IDS[30:95], IDS[20:90]], **greedy)
    (after, cached), (after_full, cached_full) = _run(swa, [IDS[:60]], **greedy), _run(full, [IDS[:60]], **greedy)
    assert after == after_full and cached["r0"] == 0 < cached_full["r0"]


def test_a_sequence_continues_only_from_where_its_windows_are_held(tiny):
    _, swa = _pair(tiny)
    runner, kv = swa.engine.runner, swa.engine.kv.new_sequence()
    runner.evaluate(kv, IDS[:70])
    # the pass at 64 let go of the block of positions 0..31: a query at 40 reads 33..39, one at 36 29..35
    assert kv.holds(70) and kv.holds(40) and not kv.holds(36)
    assert kv.rewind(36) == 0 and kv.n == 0  # a chat turn diverging at 36 recomputes all
    runner.evaluate(kv, IDS[:70])
    with pytest.raises(ContextLengthError, match="kept only 0"):
        kv.shift(30, 36, runner.shift_keys)  # the next window would read kept positions 27..29: let go
    kv.shift(4, 12, runner.shift_keys)  # its window reads only moved positions
    assert kv.n == 58 and kv.holds(58)
    kv.release()
    assert swa.engine.kv.pool.n_used == 0


def test_saved_state_of_windows_restores_exactly_and_needs_window_storage(tiny, tmp_path):
    full, swa = _pair(tiny)
    greedy = SamplingParams(temperature=0, max_tokens=20)
    for llm, name in ((full, "full"), (swa, "swa")):
        for _ in llm.generate_stream(IDS[:50], greedy):
            pass
        llm.save_state(tmp_path / name)
    with pytest.raises(StateFileError, match="keeps every position"):
        full.load_state(tmp_path / "swa")
    follow = full.conversation_tokens + [5, 6]
    want = "".join(full.generate_stream(follow, greedy))
    for name in ("swa", "full"):  # window storage restores either file
        swa.load_state(tmp_path / name)
        assert "".join(swa.generate_stream(follow, greedy)) == want


def test_the_memory_check_counts_the_window_storage(tiny, monkeypatch):
    full, swa = _pair(tiny, n_ctx=4096, kv_cache_tokens=4096)
    full_bytes, swa_bytes = full.engine.kv.pool.nbytes, swa.engine.kv.pool.nbytes
    assert swa_bytes < full_bytes / 2  # (gemma2: 2 of 3 layers slide; gemma3: 5 of 6)
    monkeypatch.setattr(pool_module, "available_memory", lambda: (full_bytes + swa_bytes) // 2)
    LLM(tiny, n_ctx=4096, kv_cache_tokens=4096, n_batch=8, max_num_seqs=2, kv_cache_dtype="f16")
    with pytest.raises(KVCacheSizeError):
        LLM(tiny, n_ctx=4096, kv_cache_tokens=4096, n_batch=8, max_num_seqs=2, kv_cache_dtype="f16", swa_full=True)


def test_gemma3_pool_holds_three_global_contexts_and_fifteen_windows(gemma_path):
    n_ctx, n_batch = 8192, 256
    llm = LLM(gemma_path, n_ctx=n_ctx, n_batch=n_batch, max_num_seqs=1, kv_cache_tokens=n_ctx,
              kv_cache_dtype="f16")
    pool, c = llm.engine.kv.pool, llm.config
    per_position = 2 * c.n_kv_heads * c.head_dim * 2  # K and V, f16, one layer
    full, sliding = pool.groups
    assert (len(full.layers), len(sliding.layers), sliding.window) == (3, 15, 512)
    expected = per_position * (3 * n_ctx + 15 * (c.sliding_window + n_batch))
    # plus the block rounding: a copy-on-write block for the global layers, one straddled block (and the
    # window's 511 rather than 512 positions) for the sliding ones
    assert expected <= pool.nbytes <= expected + per_position * (3 + 15) * pool.block_tokens
    assert pool.nbytes < 0.3 * llm.kv_bytes_per_token * n_ctx


def test_gemma3_past_the_window_equals_full_storage(gemma_path):
    ids = np.random.default_rng(1).integers(300, 20000, 700).tolist()
    args = dict(n_ctx=2048, n_batch=64, max_num_seqs=1, kv_cache_dtype="f16")
    full, swa = LLM(gemma_path, swa_full=True, **args), LLM(gemma_path, **args)
    assert len(swa.engine.kv.pool.groups) == 2
    np.testing.assert_array_equal(swa.logits(ids), full.logits(ids))
    greedy = dict(temperature=0, max_tokens=24)
    assert _run(swa, [ids[:500]], **greedy)[0] == _run(full, [ids[:500]], **greedy)[0]  # decoding across 512
