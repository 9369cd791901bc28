"""scripts/requantize.py: a real model's matrices requantized by our quantizers, metadata and 1-D tensors kept."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import gguf
import numpy as np

from gguf_runtime import LLM

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "requantize.py"


def _requantize_module():
    spec = importlib.util.spec_from_file_location("requantize", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _softmax(x):
    e = np.exp(x.astype(np.float64) - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_requantized_smollm2_keeps_metadata_and_predictions(smollm2_path, tmp_path):
    """SmolLM2 (Q4_1) to Q8_0: every matrix becomes Q8_0 and holds its rows' values to Q8_0's rounding, the
    norms stay as they were, the metadata is the same but for the file type, and the model predicts as
    before: the same greedy token at every position of a prompt, and a KL divergence from the original's
    distributions of a second rounding (an unrelated or shuffled matrix gives orders of magnitude more)."""
    out = tmp_path / "smollm2-q8_0.gguf"
    counts = _requantize_module().requantize(smollm2_path, out, int(gguf.GGMLQuantizationType.Q8_0))
    src, dst = gguf.GGUFReader(smollm2_path), gguf.GGUFReader(out)
    matrices = sum(len(t.shape) > 1 for t in src.tensors)
    assert counts == {"Q8_0": matrices, "F32": len(src.tensors) - matrices}
    old = {t.name: t for t in src.tensors}
    for t in dst.tensors:
        if len(t.shape) == 1:
            assert np.array_equal(np.asarray(t.data), np.asarray(old[t.name].data))
        else:
            assert t.tensor_type == gguf.GGMLQuantizationType.Q8_0 and list(t.shape) == list(old[t.name].shape)
    keys = lambda r: {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}  # noqa: E731
    before, after = keys(src), keys(dst)
    assert after.pop("general.file_type") == int(gguf.LlamaFileType.MOSTLY_Q8_0)
    before.pop("general.file_type")
    assert after == before
    original = LLM(str(smollm2_path), n_ctx=64, n_threads=1)
    ids = original.tokenize("The capital of France is Paris. The capital of Italy is")
    a = original.logits(ids)
    b = LLM(str(out), n_ctx=64, n_threads=1).logits(ids)
    assert np.array_equal(a.argmax(axis=1), b.argmax(axis=1))
    p, q = _softmax(a), _softmax(b)
    kld = (p * (np.log(p) - np.log(q))).sum(axis=1)
    assert kld.mean() < 0.01 and kld.max() < 0.05  # measured: mean 0.006, max 0.020
