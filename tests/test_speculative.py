"""Speculative decoding keeps the target's output: token-identical when greedy, same distribution when sampling."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gguf_runtime.api import CONVERSATION, LLM
from gguf_runtime.engine.proposers import DraftPayoff, NgramProposer, PayoffMemory
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
    spec = _run(LLM(smollm2_path, n_ctx=512, draft_model=smollm2_path, draft_max=8, adaptive_drafting=False),
                prompt, GREEDY)
    stats = spec.metrics.speculative
    assert spec.token_ids == plain.token_ids
    assert stats.drafted > 0
    # a model drafting for itself loses only to matvec-vs-matmul rounding on near-ties
    assert stats.acceptance_rate > 0.9
    assert stats.target_passes < len(plain.token_ids) / 2


def test_qwen_pair_greedy_identical(qwen05_path, qwen15_path):
    target = LLM(qwen15_path, n_ctx=512, draft_model=qwen05_path, adaptive_drafting=False)
    prompt = target.tokenize("# Python: read a CSV file and print the sum of the second column\nimport csv\n",
                             parse_special=True)
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    spec = _run(target, prompt, params)
    plain = _run(LLM(qwen15_path, n_ctx=512), prompt, params)
    assert spec.token_ids == plain.token_ids


def test_rollback_after_rejections_matches_fresh_evaluation(tiny_pair):
    target_path, _, unrelated_path = tiny_pair
    llm = LLM(target_path, n_ctx=256, draft_model=unrelated_path, adaptive_drafting=False)
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
    llm = LLM(target_path, n_ctx=64, draft_model=draft_path, kv_cache_tokens=64 * 24,  # 8 requests at a time
              adaptive_drafting=False)
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
    llm = LLM(smollm2_path, n_ctx=512, speculative="ngram", adaptive_drafting=False)
    text = "def add(a, b):\n    return a + b\n\n# The same function again:\n"
    prompt = llm.tokenize(text, parse_special=True)
    params = SamplingParams(temperature=0, max_tokens=30, ignore_eos=True)
    spec = _run(llm, prompt, params)
    assert spec.token_ids == _run(LLM(smollm2_path, n_ctx=512), prompt, params).token_ids


def test_incompatible_vocab_is_refused(smollm2_path, qwen05_path):
    with pytest.raises(VocabMismatchError):
        LLM(qwen05_path, n_ctx=256, draft_model=smollm2_path)


def test_eight_ngram_speculative_prompts_in_one_batch_equal_each_alone(smollm2_path):
    spec_llm = LLM(smollm2_path, n_ctx=512, speculative="ngram", max_num_seqs=8, kv_cache_tokens=8 * 512,
                   adaptive_drafting=False)
    plain = LLM(smollm2_path, n_ctx=512)
    prompts = [f"{i}: " + ("def add(a, b):\n    return a + b\n" if i % 2 else "red green blue, red green ") * (1 + i % 2)
               for i in range(8)]
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
    batched = spec_llm.generate(prompts, params)
    assert spec_llm.batch_stats.max_running == 8
    assert sum(o.outputs[0].metrics.speculative.accepted for o in batched) > 0  # drafts were verified
    for prompt, out in zip(prompts, batched):
        assert out.outputs[0].token_ids == _run(plain, prompt, params).token_ids, prompt[:20]


def test_draft_model_requests_run_together_and_equal_plain_greedy(tiny_pair):
    target_path, draft_path, _ = tiny_pair
    llm = LLM(target_path, n_ctx=256, draft_model=draft_path, kv_cache_tokens=4 * 256, adaptive_drafting=False)
    plain = LLM(target_path, n_ctx=256)
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8], [9], [3, 1, 4, 1, 5, 9, 2, 6]]
    outs = llm.generate(prompts, GREEDY)
    assert llm.batch_stats.max_running == 4
    assert sum(o.outputs[0].metrics.speculative.drafted for o in outs) > 0
    for prompt, out in zip(prompts, outs):
        assert out.outputs[0].token_ids == _run(plain, prompt, GREEDY).token_ids


PASSES = DraftPayoff.WINDOW + 1  # verify passes after plain steps to a verdict: the first is not judged


def test_drafting_pauses_while_it_is_slower_than_plain_steps():
    """DraftPayoff's verdicts on made-up timings: 100 ms a token drafted against 50 ms plain loses, and pauses
    drafting for 16 plain steps, then 32 after a second loss; a win keeps drafting, after one plain step. The
    first verify pass after plain steps is not judged (a draft model's catch-up)."""
    pay = DraftPayoff()
    assert not pay.drafting  # the first steps are plain: they measure that side
    for _ in range(DraftPayoff.PROBES):
        pay.plain_step(0.05)
    assert pay.drafting
    verdicts = [pay.verify_pass(0.2, 2) for _ in range(PASSES)]
    assert verdicts == [False] * (PASSES - 1) + [True]
    for backoff in (16, 32):
        for _ in range(backoff):
            assert not pay.drafting
            pay.plain_step(0.05)
        assert pay.drafting
        if backoff == 16:
            assert [pay.verify_pass(0.2, 2) for _ in range(PASSES)][-1]
    assert not any(pay.verify_pass(0.06, 3) for _ in range(PASSES))  # 20 ms a token: a win
    assert not pay.drafting
    pay.plain_step(0.05)
    assert pay.drafting and pay.backoff == DraftPayoff.MIN_BACKOFF


def test_a_new_sequence_starts_from_what_the_last_ones_learnt():
    """Sequences of one LLM share a PayoffMemory: after a win the next one drafts at once (no probes), after a
    loss it starts paused; one without the memory probes first."""
    memory = PayoffMemory()
    first = DraftPayoff(memory)
    for _ in range(DraftPayoff.PROBES):
        first.plain_step(0.05)
    [first.verify_pass(0.06, 3) for _ in range(PASSES)]  # a win
    assert DraftPayoff(memory).drafting and DraftPayoff(memory).plain_seconds == pytest.approx(0.05)
    first.plain_step(0.05)
    assert [first.verify_pass(0.2, 2) for _ in range(PASSES)][-1]  # a loss
    later = DraftPayoff(memory)
    assert not later.drafting and later.plain_due == DraftPayoff.MIN_BACKOFF and later.backoff == first.backoff
    assert not DraftPayoff().drafting and DraftPayoff().plain_due == DraftPayoff.PROBES


def test_a_draft_as_costly_as_the_target_gets_paused_and_output_is_unchanged(smollm2_path):
    """SmolLM2 drafting for itself: each drafted token costs a whole step of the same model, so drafting can
    never pay; the measured times must say so, and the tokens stay the plain greedy ones."""
    prompt = LLM(smollm2_path, n_ctx=512).tokenize("def fibonacci(n):", parse_special=True)
    params = SamplingParams(temperature=0, max_tokens=96, ignore_eos=True)
    plain = _run(LLM(smollm2_path, n_ctx=512), prompt, params)
    spec = _run(LLM(smollm2_path, n_ctx=512, draft_model=smollm2_path, draft_max=8), prompt, params)
    stats = spec.metrics.speculative
    assert spec.token_ids == plain.token_ids
    assert stats.paused >= 1
    assert stats.drafted < 0.75 * len(plain.token_ids)  # always drafting, nearly every token is a draft
