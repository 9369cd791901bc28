"""Generation loop and Python API: stop handling, seeds, streaming, context shift, prefix reuse, errors."""

from __future__ import annotations

import numpy as np
import pytest

from gguf_runtime import LLM, SamplingParams
from gguf_runtime.engine.output import StopMatcher
from gguf_runtime.errors import ContextLengthError


@pytest.fixture(scope="module")
def llm(smollm2_path):
    return LLM(model=str(smollm2_path), n_ctx=512, n_threads=2)


def test_vllm_shaped_example_runs(llm):
    params = SamplingParams(temperature=0.7, top_p=0.9, max_tokens=16, seed=1)
    outputs = llm.generate(["Explain TCP in one sentence.", "Write a haiku."], params)
    assert [o.prompt for o in outputs] == ["Explain TCP in one sentence.", "Write a haiku."]
    for o in outputs:
        out = o.outputs[0]
        assert out.finish_reason in ("stop", "length")
        assert len(out.token_ids) <= 16
        assert out.token_ids or out.finish_reason == "stop"  # a sampled EOS may end it at once
        assert out.metrics.prompt_tokens == len(o.prompt_token_ids)
        assert out.metrics.generated_tokens == len(out.token_ids)
        assert out.text == llm.detokenize(out.token_ids, skip_special=True)


def test_same_seed_same_tokens_different_seed_differs(llm):
    a = llm.generate("Once upon a time", SamplingParams(temperature=1.0, max_tokens=24, seed=7))
    b = llm.generate("Once upon a time", SamplingParams(temperature=1.0, max_tokens=24, seed=7))
    c = llm.generate("Once upon a time", SamplingParams(temperature=1.0, max_tokens=24, seed=8))
    assert a[0].outputs[0].token_ids == b[0].outputs[0].token_ids
    assert a[0].outputs[0].token_ids != c[0].outputs[0].token_ids


def test_top_k_one_equals_greedy(llm):
    greedy = llm.generate("The sky is", SamplingParams(temperature=0, max_tokens=12))[0].outputs[0]
    top1 = llm.generate("The sky is", SamplingParams(temperature=0.9, top_k=1, max_tokens=12, seed=3))[0].outputs[0]
    assert greedy.token_ids == top1.token_ids


def test_n_samples_share_the_prompt_and_differ(llm):
    before = llm.stats.tokens_evaluated_total
    out = llm.generate("List three fruits:", SamplingParams(n=3, temperature=1.0, max_tokens=8, seed=5))[0]
    texts = [o.text for o in out.outputs]
    assert len(texts) == 3 and len(set(texts)) > 1
    n_prompt = len(out.prompt_token_ids)
    # the prompt is evaluated once in full; later samples re-run only its last token
    assert llm.stats.tokens_evaluated_total - before < n_prompt + 3 * 8 + 3


def test_stop_string_never_leaks_even_across_tokens(llm):
    free = llm.generate("Count: 1, 2, 3,", SamplingParams(temperature=0, max_tokens=24))[0].outputs[0].text
    assert " 5" in free, free  # the continuation counts on
    stop = " 5"
    out = llm.generate("Count: 1, 2, 3,", SamplingParams(temperature=0, max_tokens=24, stop=[stop]))[0].outputs[0]
    assert out.finish_reason == "stop" and out.stop_reason == stop
    assert out.text == free[:free.index(stop)]
    streamed = "".join(llm.stream("Count: 1, 2, 3,", SamplingParams(temperature=0, max_tokens=24, stop=[stop])))
    assert streamed == out.text


def test_stop_matcher_holds_back_partial_matches():
    m = StopMatcher(["END", "\n\n"])
    assert m.safe_end("abc EN") == 4
    assert m.safe_end("abc\n") == 3
    assert m.safe_end("abc") == 3
    assert m.find("abc END", 0) == (4, "END")


def test_eos_stops_and_ignore_eos_continues(llm):
    chat = llm.render_chat([{"role": "user", "content": "Say hi."}])
    out = llm.generate(chat, SamplingParams(temperature=0, max_tokens=200))[0].outputs[0]
    assert out.finish_reason == "stop" and out.stop_reason in llm.tokenizer.eog_ids
    forced = llm.generate(chat, SamplingParams(temperature=0, max_tokens=len(out.token_ids) + 5,
                                               ignore_eos=True))[0].outputs[0]
    assert forced.finish_reason == "length"


def test_prefix_reuse_evaluates_only_new_tokens(llm):
    text = "The quick brown fox jumps over the lazy dog. " * 4
    llm.generate(text, SamplingParams(temperature=0, max_tokens=2))
    out = llm.generate(text + "And then", SamplingParams(temperature=0, max_tokens=2))[0]
    m = out.outputs[0].metrics
    assert m.reused_tokens >= len(llm.tokenize(text)) - 2


def test_context_shift_generates_three_contexts_coherently(smollm2_path):
    small = LLM(smollm2_path, n_ctx=256)
    prompt = "Here is a long story about a dragon who loved to bake bread in the mountains."
    out = small.generate(prompt, SamplingParams(temperature=0.7, top_p=0.9, repetition_penalty=1.1,
                                                max_tokens=3 * 256, ignore_eos=True, seed=1))[0].outputs[0]
    assert len(out.token_ids) == 3 * 256 and out.finish_reason == "length"
    # coherent text: mostly ASCII words, no runs of one token
    words = out.text.split()
    assert len(words) > 300
    assert sum(w.isascii() for w in words) / len(words) > 0.95
    ids = np.array(out.token_ids)
    assert np.max(np.unique(ids, return_counts=True)[1]) < 0.2 * len(ids)


def test_logits_shape_and_determinism(llm):
    ids = llm.tokenize("Hello world, this is a test.")
    a = llm.logits(ids)
    b = llm.logits(ids)
    assert a.shape == (len(ids), llm.tokenizer.n_vocab) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)


def test_token_id_prompts_and_dicts(llm):
    ids = llm.tokenize("The sky is")
    p = SamplingParams(temperature=0, max_tokens=5)
    a = llm.generate(ids, p)[0].outputs[0].token_ids
    b = llm.generate({"prompt_token_ids": ids}, p)[0].outputs[0].token_ids
    c = llm.generate("The sky is", p)[0].outputs[0].token_ids
    assert a == b == c


def test_errors_are_clear(llm, smollm2_path):
    with pytest.raises(ContextLengthError, match="context holds 512"):
        llm.generate("word " * 600, SamplingParams(max_tokens=4))
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        LLM(smollm2_path, tensor_parallel_size=2)
    with pytest.raises(ValueError, match="quantization"):
        LLM(smollm2_path, quantization="gptq")
    with pytest.raises(TypeError, match="supported"):
        LLM(smollm2_path, not_an_option=1)
    with pytest.raises(FileNotFoundError):
        LLM("/nonexistent/model.gguf")
    with pytest.raises(ValueError, match="vocabulary"):
        llm.generate([10 ** 9], SamplingParams(max_tokens=1))


def test_two_llms_keep_their_own_thread_counts(smollm2_path):
    import numba

    one, two = LLM(smollm2_path, n_ctx=128, n_threads=1), LLM(smollm2_path, n_ctx=128, n_threads=2)
    params = SamplingParams(temperature=0, max_tokens=4)
    a = one.generate("Hello", params)[0].outputs[0].token_ids
    assert numba.get_num_threads() == 1  # applied by its runner when it ran
    b = two.generate("Hello", params)[0].outputs[0].token_ids
    assert numba.get_num_threads() == 2
    assert one.generate("Hello", params)[0].outputs[0].token_ids == a == b
    assert numba.get_num_threads() == 1
