"""Sliding-window attention on the real gemma-3 file: past its 512-position window, local layers must drop
the oldest positions exactly where llama.cpp does (the tiny models in test_archs_parity.py check a window
of 8 and the context shift)."""

from __future__ import annotations

import json

import numpy as np

from gguf_runtime.api import LLM
from test_forward_parity import KV_TYPE, top_kld


def test_gemma3_beyond_the_sliding_window_matches_llama_cpp(gemma_path, fixtures_dir):
    long = json.loads((fixtures_dir / "forward" / "gemma-3-270m.json").read_text())["long"]
    ids, first = long["ids"], long["first"]
    llm = LLM(gemma_path, n_ctx=1024, kv_cache_dtype=KV_TYPE["gemma-3-270m"])
    assert llm.config.sliding_window < first, "the rows checked must lie past the window"
    # (32, V): the logits after each of tokens first..end-1, as the fixture's rows (the prompt in one batch)
    logits = llm.logits(ids[:first], then=ids[first:])[first:]
    ref_ids, ref_vals = np.array(long["top_ids"]), np.array(long["top_logits"])
    top1 = logits.argmax(axis=1) == ref_ids[:, 0]
    gaps = ref_vals[:, 0] - ref_vals[:, 1]
    assert top1[gaps > 0.5].all(), f"top-1 differs at clear positions {np.flatnonzero(~top1 & (gaps > 0.5))}"
    kld = top_kld(ref_ids, ref_vals, logits)
    assert kld.mean() < 0.01, kld.mean()
