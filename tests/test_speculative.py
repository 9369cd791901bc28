"""Speculative decoding keeps the target's output: token-identical when greedy, same distribution when sampling."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gguf_runtime.api import CONVERSATION, LLM
from gguf_runtime.engine.proposers import NgramProposer
from gguf_runtime.errors import VocabMismatchError
from gguf_runtime.sampling import Sampler, SamplingParams

from tiny_model import write_tiny_model

GREEDY = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    target = write_tiny_model(d / "target.gguf", seed=0, logit_scale=3.0)
    # same weights, flatter output: drafts are often right (acceptance > 0) but q differs clearly from p
    draft = write_tiny_model(d / "draft.gguf", seed=0, logit_scale=1.5)
    unrelated = write_tiny_model(d / "unrelated.gguf", seed=1, logit_scale=3.0)
    return target, draft, unrelated


def _run(llm: LLM, prompt, params: SamplingParams):
    """One request through the engine; its output (metrics.speculative holds the drafting stats)."""
    return llm.generate(prompt, params)[0].outputs[0]


def _stream(llm: LLM, prompt, params: SamplingParams):
    """One request through generate_stream, which leaves its KV sequence in the conversation cache."""
    gen = llm.generate_stream(prompt, params)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def test_self_draft_accepts_everything_and_matches_greedy(smollm2_path):
    llm = LLM(smollm2_path, n_ctx=512)
    prompt = llm.tokenize("def fibonacci(n):", parse_special=True)
    plain = _run(llm, prompt, GREEDY)
    spec = _run(LLM(smollm2_path, n_ctx=512, draft_model=smollm2_path, draft_max=8), prompt, GREEDY)
    stats = spec.metrics.speculative
    assert spec.token_ids == plain.token_ids
    assert stats.drafted > 0
    # a model drafting for itself loses only to matvec-vs-matmul rounding on near-ties
    assert stats.acceptance_rate > 0.9
    assert stats.target_passes < len(plain.token_ids) / 2


def test_qwen_pair_greedy_identical(qwen05_path, qwen15_path):
    target = LLM(qwen15_path, n_ctx=512, draft_model=qwen05_path)
    prompt = target.tokenize("# Python: read a CSV file and print the sum of the second column\nimport csv\n",
                             parse_special=True)
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    spec = _run(target, prompt, params)
    plain = _run(LLM(qwen15_path, n_ctx=512), prompt, params)
    assert spec.token_ids == plain.token_ids


def test_rollback_after_rejections_matches_fresh_evaluation(tiny_pair):
    target_path, _, unrelated_path = tiny_pair
    llm = LLM(target_path, n_ctx=256, draft_model=unrelated_path)
    prompt = [1, 2, 3, 4]
    spec = _stream(llm, prompt, GREEDY)
    assert spec.stats.speculative.drafted > spec.stats.speculative.accepted  # the unrelated draft gets rejected
    cached = llm.conversation_tokens
    k_spec = _keys(llm)
    plain_llm = LLM(target_path, n_ctx=256)
    plain = _run(plain_llm, prompt, GREEDY)
    assert spec.token_ids == plain.token_ids
    _stream(plain_llm, cached, SamplingParams(max_tokens=1))  # a fresh evaluation of the cached tokens
    assert plain_llm.conversation_tokens == cached
    # batched verify (matmul, float activations) and decode (matvec, Q8 activations) round differently by
    # ~1e-2; a rollback bug would leave keys of rejected tokens, off by O(1)
    np.testing.assert_allclose(k_spec, _keys(plain_llm), atol=0.1)


def _keys(llm: LLM) -> np.ndarray:
    """Every key of the conversation cache, dequantized: (layers, H_kv, n, hd)."""
    cache = llm.engine.slot(CONVERSATION)
    return np.stack([cache.rows(layer)[0] for layer in range(llm.config.n_layers)])


def _exact_second_token_distribution(llm: LLM, prompt: list[int], params: SamplingParams) -> np.ndarray:
    """p(t2) = Σ_t1 p(t1) p(t2 | t1) under the sampler's transforms, by enumerating t1."""
    sampler = Sampler(params)
    p1 = sampler.probs_for(llm.logits(prompt)[-1], prompt)
    total = np.zeros(llm.tokenizer.n_vocab)
    for t1 in np.flatnonzero(p1 > 1e-9):
        logits = llm.logits(prompt + [int(t1)])[-1]
        total += p1[t1] * sampler.probs_for(logits, prompt + [int(t1)])
    return total


def _chi_square(counts: np.ndarray, probs: np.ndarray) -> tuple[float, int]:
    n = counts.sum()
    keep = probs * n >= 5  # pool rare cells, as the test requires expected counts >= 5
    obs = np.append(counts[keep], counts[~keep].sum())
    exp = np.append(probs[keep], probs[~keep].sum()) * n
    obs, exp = obs[exp > 0], exp[exp > 0]
    return float(((obs - exp) ** 2 / exp).sum()), len(obs) - 1


CHI2_CRIT_0001 = {d: c for d, c in zip(range(1, 31), (
    10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12, 27.88, 29.59, 31.26, 32.91, 34.53, 36.12, 37.70,
    39.25, 40.79, 42.31, 43.82, 45.31, 46.80, 48.27, 49.73, 51.18, 52.62, 54.05, 55.48, 56.89, 58.30, 59.70))}


def test_sampling_distribution_is_preserved(tiny_pair):
    target_path, draft_path, _ = tiny_pair
    llm = LLM(target_path, n_ctx=64, draft_model=draft_path, kv_cache_tokens=64 * 24)  # 8 requests at a time
    prompt = [5, 6, 7]
    params = SamplingParams(temperature=1.0, max_tokens=2, ignore_eos=True, seed=1234)
    exact = _exact_second_token_distribution(llm, prompt, params)
    draft_llm = LLM(draft_path, n_ctx=64)
    draft_exact = _exact_second_token_distribution(draft_llm, prompt, params)

    n = 1500
    counts = np.zeros(llm.tokenizer.n_vocab)
    accepted = 0
    # one batch of n requests, each its own seed: verify rows of up to 8 sequences share each target pass
    outs = llm.generate([prompt] * n, [dataclasses.replace(params, seed=params.seed + i) for i in range(n)])
    for request in outs:
        out = request.outputs[0]
        counts[out.token_ids[1]] += 1
        accepted += out.metrics.speculative.accepted
    stat, dof = _chi_square(counts, exact)
    assert stat < CHI2_CRIT_0001[dof], f"speculative samples differ from the target: chi2 {stat:.1f}, dof {dof}"
    # the test has power: the same samples are far from the draft model's own distribution
    wrong, wrong_dof = _chi_square(counts, draft_exact)
    assert wrong > CHI2_CRIT_0001[wrong_dof], "too few samples to tell the draft from the target"
    assert accepted > n / 4


def test_ngram_drafter_proposes_what_followed_the_last_match():
    d = NgramProposer(ngram_min=2, ngram_max=3)
    history = [1, 2, 3, 4, 5, 9, 9, 2, 3]
    drafts, qs = d.propose(history, 3, Sampler(GREEDY))
    assert drafts == [4, 5, 9] and qs == [None, None, None]
    assert d.propose([1, 2, 3], 3, Sampler(GREEDY)) == ([], [])


def test_ngram_speculation_is_exact(smollm2_path):
    llm = LLM(smollm2_path, n_ctx=512, speculative="ngram")
    text = "def add(a, b):\n    return a + b\n\n# The same function again:\n"
    prompt = llm.tokenize(text, parse_special=True)
    params = SamplingParams(temperature=0, max_tokens=30, ignore_eos=True)
    spec = _run(llm, prompt, params)
    assert spec.token_ids == _run(LLM(smollm2_path, n_ctx=512), prompt, params).token_ids


def test_incompatible_vocab_is_refused(smollm2_path, qwen05_path):
    with pytest.raises(VocabMismatchError):
        LLM(qwen05_path, n_ctx=256, draft_model=smollm2_path)
