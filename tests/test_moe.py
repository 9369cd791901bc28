"""Mixture of experts (qwen3moe): a decode step reads only the chosen experts' weights, and a prompt runs each
chosen expert once per layer over all the tokens that chose it. (Parity with llama.cpp: test_archs_parity.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from gguf_runtime import model as model_module
from gguf_runtime.api import LLM
from gguf_runtime.quants import QMatrix
from tiny_model import ARCH_CASES, write_tiny_model


@pytest.fixture(scope="module")
def moe(tmp_path_factory):
    path = write_tiny_model(tmp_path_factory.mktemp("moe") / "moe.gguf", **ARCH_CASES["qwen3moe-q8_0"])
    return LLM(path, n_ctx=128)


@pytest.fixture
def weight_reads(monkeypatch):
    """(matrix, tokens) for every weight product of the forward pass while the fixture is active."""
    reads: list[tuple[QMatrix, int]] = []
    original = model_module._linear

    def counted(w, x, bias, decode):
        reads.append((w, x.shape[0]))
        return original(w, x, bias, decode)

    monkeypatch.setattr(model_module, "_linear", counted)
    return reads


def test_decode_reads_active_parameters_only(moe, weight_reads):
    model = moe.model
    c = model.config
    runner, kv = moe.engine.runner, moe.engine.kv.new_sequence()
    runner.evaluate(kv, list(range(1, 20)))
    weight_reads.clear()
    runner.forward([kv], [[7]])  # one decode step
    kv.release()
    read = sum(m.nbytes for m, _ in weight_reads)
    # one expert of every layer (all experts of a tensor have the same size)
    per_expert = sum(m[0].nbytes for L in model.layers for m in (L.experts.gate, L.experts.up, L.experts.down))
    everything = sum(m.nbytes for L in model.layers for m in (L.wq, L.wk, L.wv, L.wo, L.experts.router))
    active = everything + model.output.nbytes + c.n_expert_used * per_expert
    total = everything + model.output.nbytes + c.n_expert * per_expert
    assert read == active, (read, active)
    assert read < 0.5 * total  # 2 of 8 experts: a quarter of the expert weights


def test_prefill_runs_each_chosen_expert_once_per_layer(moe, weight_reads):
    model = moe.model
    prompt = list(range(100, 140))
    moe.logits(prompt)
    expert_calls = [(m, n) for m, n in weight_reads if "_exps" in m.name]
    layer_calls = {}
    for m, n in expert_calls:
        layer_calls.setdefault(m.name, []).append(n)
    assert all(len(ns) == 1 for ns in layer_calls.values()), "an expert ran more than once in one layer"
    for i, L in enumerate(model.layers):
        rows = [n for name, (n,) in layer_calls.items() if name.startswith(f"blk.{i}.ffn_gate_exps")]
        # every token goes through n_expert_used experts: the grouped rows add up to that
        assert sum(rows) == len(prompt) * model.config.n_expert_used
    assert np.isfinite(moe.logits(prompt, then=[3])).all()
