"""Samplers: exact kept sets on hand-made logits, llama.cpp penalty arithmetic, determinism, and the sampled
distribution against softmax (chi-square with a fixed seed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gguf_runtime.sampling import (
    SampledToken,
    Sampler,
    SamplingParams,
    apply_logit_bias,
    apply_penalties,
    log_softmax,
    logprobs_topn,
    min_p,
    restrict_to,
    sampled_token,
    softmax,
    temperature,
    top_k,
    top_p,
    typical_p,
)

# Probabilities 0.5, 0.3, 0.15, 0.05 placed out of order so "first ids" and "most probable" differ.
PROBS = {2: 0.5, 0: 0.3, 3: 0.15, 1: 0.05}
LOGITS = np.array([math.log(PROBS[i]) for i in range(4)], dtype=np.float32)


def kept(logits: np.ndarray) -> set[int]:
    return set(np.flatnonzero(np.isfinite(logits)).tolist())


def random_logits(seed: int, n: int = 1000) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 3).astype(np.float32)


# --- SamplingParams -------------------------------------------------------------------------------------------

def test_defaults_are_vllms():
    p = SamplingParams()
    assert (p.n, p.temperature, p.top_p, p.top_k, p.min_p, p.max_tokens, p.seed) == (1, 1.0, 1.0, -1, 0.0, 16, None)
    assert p.stop == [] and p.stop_token_ids == [] and p.logit_bias is None


def test_llama_cpp_defaults():
    p = SamplingParams.llama_cpp_defaults(seed=3)
    assert (p.temperature, p.top_k, p.top_p, p.min_p, p.penalty_last_n, p.seed) == (0.8, 40, 0.95, 0.05, 64, 3)


@pytest.mark.parametrize("field, value, message", [
    ("n", 0, "n must be >= 1, got 0"),
    ("temperature", -0.1, "temperature must be >= 0"),
    ("temperature", float("nan"), "temperature must be a finite number"),
    ("top_p", 0.0, "top_p must be in (0, 1], got 0.0"),
    ("top_p", 1.5, "top_p must be in (0, 1]"),
    ("top_k", -2, "top_k must be -1, 0 (both = off) or >= 1, got -2"),
    ("top_k", 2.5, "top_k must be an integer"),
    ("min_p", 1.1, "min_p must be in [0, 1]"),
    ("typical_p", 0, "typical_p must be in (0, 1]"),
    ("repetition_penalty", 0.0, "repetition_penalty must be > 0"),
    ("presence_penalty", 2.5, "presence_penalty must be in [-2, 2]"),
    ("frequency_penalty", -3, "frequency_penalty must be in [-2, 2]"),
    ("penalty_last_n", -2, "penalty_last_n must be >= -1"),
    ("seed", -1, "seed must be None or >= 0"),
    ("max_tokens", 0, "max_tokens must be None or >= 1"),
    ("min_tokens", -1, "min_tokens must be >= 0"),
    ("logprobs", -1, "logprobs must be None or >= 0"),
    ("stop", ["ok", ""], "stop must be None, a non-empty string or a list"),
    ("stop_token_ids", [1, -5], "stop_token_ids must be a list of token ids >= 0"),
    ("logit_bias", {"x": 1.0}, "logit_bias keys must be token ids"),
    ("logit_bias", {5: float("nan")}, "logit_bias[5] must be a number"),
    ("allowed_token_ids", [], "allowed_token_ids must be None or a non-empty list"),
])
def test_validation_names_field_and_range(field, value, message):
    with pytest.raises(ValueError) as err:
        SamplingParams(**{field: value})
    assert message in str(err.value)


def test_min_tokens_above_max_tokens():
    with pytest.raises(ValueError, match=r"min_tokens must be <= max_tokens \(4\), got 5"):
        SamplingParams(max_tokens=4, min_tokens=5)


def test_unknown_keyword_lists_supported_fields():
    with pytest.raises(TypeError) as err:
        SamplingParams(temprature=0.5)
    assert "temprature" in str(err.value) and "supported: n, temperature, top_p" in str(err.value)


def test_vllm_only_keyword_says_unsupported():
    with pytest.raises(TypeError, match="vLLM option.*best_of not supported by gguf-runtime"):
        SamplingParams(best_of=2)


def test_normalisation():
    p = SamplingParams(stop="###", stop_token_ids=(7,), logit_bias={"12": -1, 3: float("-inf")})
    assert p.stop == ["###"] and p.stop_token_ids == [7]
    assert p.logit_bias == {12: -1.0, 3: float("-inf")}


def test_params_are_frozen():
    with pytest.raises(AttributeError):
        SamplingParams().temperature = 0.5  # type: ignore[misc]


# --- pure transforms ------------------------------------------------------------------------------------------

def test_penalty_arithmetic_matches_llama_cpp():
    logits = np.array([2.0, -1.0, 0.5, 0.0, 3.0], dtype=np.float32)
    out = apply_penalties(logits, [0, 0, 1, 3, 0], repetition=2.0, presence=0.5, frequency=0.25)
    # token 0: seen 3x, positive -> 2/2 - (3*0.25 + 0.5); token 1: 1x, negative -> -1*2 - 0.75;
    # token 3: 1x, 0 is unchanged by either branch -> 0 - 0.75; tokens 2 and 4 unseen.
    np.testing.assert_array_equal(out, np.array([-0.25, -2.75, 0.5, -0.75, 3.0], dtype=np.float32))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(logits, [2.0, -1.0, 0.5, 0.0, 3.0])  # input untouched


def test_penalties_noop_and_bad_ids():
    logits = random_logits(0, 10)
    assert apply_penalties(logits, [1, 2], 1.0, 0.0, 0.0) is logits
    assert apply_penalties(logits, [], 1.3, 0.1, 0.1) is logits
    with pytest.raises(ValueError, match="token id 10 outside the vocabulary"):
        apply_penalties(logits, [10], 1.1)


def test_logit_bias_adds_and_bans():
    logits = np.zeros(5, dtype=np.float32)
    out = apply_logit_bias(logits, {1: 2.5, 3: float("-inf")})
    np.testing.assert_array_equal(out, [0.0, 2.5, 0.0, -np.inf, 0.0])
    with pytest.raises(ValueError, match="logit_bias contains token id 5"):
        apply_logit_bias(logits, {5: 1.0})


def test_restrict_to():
    assert kept(restrict_to(LOGITS, [3, 1])) == {1, 3}
    with pytest.raises(ValueError, match="allowed_token_ids contains token id 9"):
        restrict_to(LOGITS, [9])


def test_top_k_exact_set_and_ties():
    assert kept(top_k(LOGITS, 2)) == {2, 0}
    assert kept(top_k(LOGITS, 1)) == {2}
    assert top_k(LOGITS, 0) is LOGITS and top_k(LOGITS, -1) is LOGITS and top_k(LOGITS, 4) is LOGITS
    tied = np.array([1.0, 5.0, 3.0, 3.0, 3.0, 0.0], dtype=np.float32)
    assert kept(top_k(tied, 3)) == {1, 2, 3}  # ties at the boundary: lowest ids


def test_top_p_exact_sets():
    assert kept(top_p(LOGITS, 0.45)) == {2}
    assert kept(top_p(LOGITS, 0.75)) == {2, 0}
    assert kept(top_p(LOGITS, 0.9)) == {2, 0, 3}
    assert kept(top_p(LOGITS, 0.99)) == {0, 1, 2, 3}
    assert top_p(LOGITS, 1.0) is LOGITS


def test_top_p_large_nucleus_grows_head_and_breaks_ties_by_id():
    uniform = np.zeros(5000, dtype=np.float32)
    assert kept(top_p(uniform, 0.5001)) == set(range(2501))


def test_top_p_ignores_removed_tokens():
    logits = LOGITS.copy()
    logits[2] = -np.inf  # remaining mass 0.3, 0.05, 0.15 renormalised: 0.6, 0.1, 0.3
    assert kept(top_p(logits, 0.85)) == {0, 3}


def test_min_p_exact_set():
    assert kept(min_p(LOGITS, 0.2)) == {2, 0, 3}  # p >= 0.1
    assert kept(min_p(LOGITS, 0.7)) == {2}
    assert min_p(LOGITS, 0.0) is LOGITS


def test_typical_p_exact_sets():
    # H = 1.142; |(-log p) - H| ranks the tokens 0.3 (0.062), 0.5 (0.449), 0.15 (0.755), 0.05 (1.854).
    assert kept(typical_p(LOGITS, 0.2)) == {0}  # the most probable token is not the most typical
    assert kept(typical_p(LOGITS, 0.5)) == {0, 2}
    assert kept(typical_p(LOGITS, 0.85)) == {0, 2, 3}
    assert typical_p(LOGITS, 1.0) is LOGITS


def test_temperature():
    np.testing.assert_allclose(temperature(LOGITS, 0.5), LOGITS * 2, rtol=1e-6)
    tied = np.array([1.0, 4.0, 2.0, 4.0], dtype=np.float32)
    assert kept(temperature(tied, 0.0)) == {1}


def test_softmax_and_log_softmax():
    probs = softmax(LOGITS)
    np.testing.assert_allclose(probs, [0.3, 0.05, 0.5, 0.15], rtol=1e-6)
    removed = LOGITS.copy()
    removed[1] = -np.inf
    assert softmax(removed)[1] == 0.0 and softmax(removed).sum() == pytest.approx(1.0)
    np.testing.assert_allclose(log_softmax(LOGITS + 7), np.log([0.3, 0.05, 0.5, 0.15]), rtol=1e-6)
    with pytest.raises(ValueError, match="every token was removed"):
        softmax(np.full(3, -np.inf, dtype=np.float32))


def test_logprobs_topn():
    ids, logp = logprobs_topn(LOGITS, 3)
    assert ids.tolist() == [2, 0, 3]
    np.testing.assert_allclose(logp, np.log([0.5, 0.3, 0.15]), rtol=1e-6)
    assert logprobs_topn(LOGITS, 0)[0].size == 0


# --- Sampler --------------------------------------------------------------------------------------------------

def run(params: SamplingParams, steps: int = 30, stream: int = 0) -> list[int]:
    sampler, history = Sampler(params, stream=stream), []
    for step in range(steps):
        history.append(sampler.sample(random_logits(step), history))
    return history


def test_same_seed_same_tokens_different_seed_different_tokens():
    params = SamplingParams(seed=1234, top_p=0.95)
    assert run(params) == run(params)
    assert run(params) != run(SamplingParams(seed=1235, top_p=0.95))
    assert run(params, stream=0) != run(params, stream=1)


def test_greedy_is_argmax_with_lowest_id_ties_and_consumes_no_randomness():
    sampler = Sampler(SamplingParams(temperature=0.0, seed=0))
    state = sampler.rng.bit_generator.state
    tied = np.array([0.0, 3.0, -1.0, 3.0], dtype=np.float32)
    assert sampler.sample(tied) == 1
    assert sampler.rng.bit_generator.state == state


def test_tiny_temperature_is_greedy_not_nan():
    logits = random_logits(4)
    assert SamplingParams(temperature=1e-9).greedy and not SamplingParams(temperature=0.5).greedy
    assert Sampler(SamplingParams(temperature=1e-30, seed=1)).sample(logits) == int(np.argmax(logits))


@pytest.mark.parametrize("seed", range(5))
def test_top_k_1_equals_greedy(seed):
    history = list(range(0, 40, 3))
    pen = dict(repetition_penalty=1.3, presence_penalty=0.2)
    greedy = Sampler(SamplingParams(temperature=0, **pen))
    topk1 = Sampler(SamplingParams(top_k=1, temperature=1.7, seed=seed, **pen))
    logits = random_logits(100 + seed)
    assert topk1.sample(logits, history) == greedy.sample(logits, history)
    assert greedy.sample(logits, history) == int(np.argmax(greedy.processed_logits(logits, history)))


def chi_square(counts: np.ndarray, probs: np.ndarray) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


# Critical value of chi-square with 5 degrees of freedom at p = 0.001.
CHI2_5DF_999 = 20.515


@pytest.mark.parametrize("temp", [1.0, 0.6])
def test_sampled_distribution_matches_softmax(temp):
    logits = np.array([1.0, 0.2, -0.5, 2.0, 0.0, 1.5], dtype=np.float32)
    sampler = Sampler(SamplingParams(seed=7, temperature=temp))
    counts = np.bincount([sampler.sample(logits) for _ in range(20000)], minlength=6)
    assert chi_square(counts, softmax(logits / np.float32(temp)).astype(np.float64)) < CHI2_5DF_999
    # And the test can fail: the same counts are far from the untempered / uniform distributions.
    assert chi_square(counts, np.full(6, 1 / 6)) > 10 * CHI2_5DF_999


def test_filtered_tokens_are_never_sampled_and_rest_renormalised():
    sampler = Sampler(SamplingParams(seed=3, top_k=2))
    counts = np.bincount([sampler.sample(LOGITS) for _ in range(5000)], minlength=4)
    assert counts[1] == 0 and counts[3] == 0
    assert counts[2] / counts.sum() == pytest.approx(0.5 / 0.8, abs=0.02)


def test_min_p_runs_before_temperature():
    # llama.cpp order: min_p sees untempered logits, so a high temperature does not widen its kept set.
    probs = Sampler(SamplingParams(min_p=0.2, temperature=10.0)).probs_for(LOGITS)
    assert set(np.flatnonzero(probs).tolist()) == {0, 2, 3}


def test_probs_for_is_normalised_final_distribution():
    sampler = Sampler(SamplingParams(top_k=3, temperature=0.5, repetition_penalty=1.5))
    logits = random_logits(9, 50)
    probs = sampler.probs_for(logits, [4, 5])
    assert probs.shape == (50,) and probs.sum() == pytest.approx(1.0, abs=1e-6)
    assert np.count_nonzero(probs) == 3
    expected = softmax(temperature(top_k(apply_penalties(logits, [4, 5], 1.5), 3), 0.5))
    np.testing.assert_allclose(probs, expected, rtol=1e-6)


@pytest.mark.parametrize("last_n, penalised", [(2, {8, 9}), (0, set()), (-1, {1, 8, 9}), (64, {1, 8, 9})])
def test_penalty_window(last_n, penalised):
    logits = np.ones(10, dtype=np.float32)
    out = Sampler(SamplingParams(repetition_penalty=2.0, penalty_last_n=last_n)).processed_logits(logits, [1, 8, 9])
    assert set(np.flatnonzero(out < 1).tolist()) == penalised


def test_logit_bias_and_allowed_ids_in_sampler():
    logits = np.zeros(6, dtype=np.float32)
    assert Sampler(SamplingParams(temperature=0, logit_bias={4: 1.0})).sample(logits) == 4
    sampler = Sampler(SamplingParams(seed=0, allowed_token_ids=[2, 5]))
    assert {sampler.sample(logits) for _ in range(200)} == {2, 5}


def test_draw_never_picks_zero_weight():
    sampler = Sampler(SamplingParams(seed=11))
    weights = np.array([0.0, 2.0, 0.0, 0.0, 1.0, 0.0])
    assert {sampler.draw(weights) for _ in range(500)} == {1, 4}
    with pytest.raises(ValueError, match="no positive weight"):
        sampler.draw(np.zeros(3))


def test_step_reports_raw_logprobs():
    sampler = Sampler(SamplingParams(seed=5, logprobs=2, logit_bias={1: 100.0}))
    result = sampler.step(LOGITS)
    assert result.token_id == 1  # the bias decides the sample...
    assert result.logprob == pytest.approx(math.log(0.05), rel=1e-6)  # ...but logprobs are of the raw model
    assert [t for t, _ in result.top_logprobs] == [2, 0]
    assert Sampler(SamplingParams(seed=5)).step(LOGITS) == SampledToken(Sampler(SamplingParams(seed=5)).sample(LOGITS))


def test_sampled_token_logprobs():
    assert sampled_token(3, LOGITS, None) == SampledToken(3)
    token = sampled_token(3, LOGITS, 0)
    assert token.logprob == pytest.approx(math.log(0.15), rel=1e-6) and token.top_logprobs == ()


def test_rejects_non_vector_logits():
    with pytest.raises(ValueError, match="1-D"):
        Sampler().sample(np.zeros((2, 3), dtype=np.float32))
