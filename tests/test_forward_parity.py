"""Forward-pass parity with llama.cpp: logits, greedy continuations and perplexity against recorded fixtures.

Fixtures come from scripts/fixtures_forward.py (llama-cpp-python). Token ids in them are llama.cpp's, so
this tests the model independently of our tokenizer.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from gguf_runtime.api import LLM
from gguf_runtime.perplexity import perplexity
from gguf_runtime.sampling import SamplingParams

MODELS = {"smollm2-135m": "smollm2_path", "qwen2.5-coder-0.5b": "qwen05_path",
          "qwen2.5-coder-1.5b": "qwen15_path"}
N_GREEDY = 64
NEAR_TIE = 0.5  # logits closer than this may swap order under activation-quantization noise


@pytest.fixture(scope="module", params=list(MODELS))
def case(request, fixtures_dir):
    path = request.getfixturevalue(MODELS[request.param])
    ref = json.loads((fixtures_dir / "forward" / f"{request.param}.json").read_text())
    return LLM(path, n_ctx=512), ref


def test_logits_match_llama_cpp(case):
    llm, ref = case
    top1_agree = positions = 0
    overlaps, diffs, far_misses, floor = [], [], [], []
    for key, p in ref["prompts"].items():
        seq = p["ids"] + p["greedy"][:-1]  # the reference rows cover the prompt and its greedy continuation
        logits = llm.logits(seq)  # (T, V)
        ref_ids = np.array(p["top_ids"])  # (T, 20)
        ref_vals = np.array(p["top_logits"])
        ours_top5 = np.argsort(-logits, axis=1, kind="stable")[:, :5]
        top1_agree += int((ours_top5[:, 0] == ref_ids[:, 0]).sum())
        positions += len(seq)
        floor.append(p["batch_top1_agreement"] * len(seq))
        for t in np.flatnonzero(ours_top5[:, 0] != ref_ids[:, 0]):
            # how far below llama.cpp's best does llama.cpp rank our choice?
            ours_in_ref = np.flatnonzero(ref_ids[t] == ours_top5[t, 0])
            gap = ref_vals[t, 0] - (ref_vals[t, ours_in_ref[0]] if ours_in_ref.size else -np.inf)
            if gap > NEAR_TIE:
                far_misses.append((key, int(t), float(gap)))
        overlaps += [len(set(a) & set(b)) for a, b in zip(ours_top5.tolist(), ref_ids[:, :5].tolist())]
        diffs.append(np.abs(np.take_along_axis(logits, ref_ids, axis=1) - ref_vals))
    diffs = np.concatenate(diffs)
    # llama.cpp agrees with itself only this often when the same tokens run in one batch instead of one by
    # one (SmolLM2: ~96%, its near-ties flip): the target is 99% or that floor, whichever is lower
    self_agreement = sum(floor) / positions
    assert top1_agree / positions >= min(0.99, self_agreement - 0.01), \
        f"top-1 agreement {top1_agree}/{positions}; llama.cpp batch vs sequential: {self_agreement:.3f}"
    assert not far_misses, f"top-1 differs where llama.cpp has no near-tie: {far_misses}"
    assert min(overlaps) >= 3 and np.mean(overlaps) >= 4.5, f"top-5 overlaps {overlaps}"
    # Same quantized weights; the rest is activation rounding. For scale: an exact float64 evaluation of
    # SmolLM2 differs from llama.cpp by a mean 0.13 on these logits (~34), as much as we do.
    assert diffs.mean() < 0.25 and np.percentile(diffs, 99) < 1.0, (diffs.mean(), np.percentile(diffs, 99))


def test_greedy_continuation_matches_llama_cpp(case):
    llm, ref = case
    params = SamplingParams(temperature=0, max_tokens=N_GREEDY, ignore_eos=True)
    for key, p in ref["prompts"].items():
        ours = llm.generate(p["ids"], params)[0].outputs[0].token_ids
        want = p["greedy"]
        if ours == want:
            continue
        # a divergence is only acceptable at a near-tie between llama.cpp's and our choice
        i = next(j for j, (a, b) in enumerate(zip(ours, want)) if a != b)
        logits = llm.logits(p["ids"] + want[:i])[-1]
        gap = float(logits[ours[i]] - logits[want[i]])
        assert gap < NEAR_TIE, f"{key}: diverged at token {i} ({ours[i]} vs llama.cpp {want[i]}), gap {gap:.3f}"


def test_perplexity_within_one_percent(case):
    llm, ref = case
    ppl_ref = ref["perplexity"]
    tokens = ppl_ref["tokens"]
    result = perplexity(tokens, ppl_ref["n_ctx"], llm.logits,
                        llm.tokenizer.bos_id if llm.tokenizer.add_bos else None, ppl_ref["chunks"])
    assert abs(result.ppl / ppl_ref["ppl"] - 1) < 0.01, (result.ppl, ppl_ref["ppl"])
