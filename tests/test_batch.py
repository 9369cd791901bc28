"""Continuous batching over the paged KV pool: identity with one-at-a-time runs, pool accounting, prefix
sharing, quantized KV, saved state."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest

from gguf_runtime import LLM, SamplingParams
from gguf_runtime.errors import PoolFullError, StateFileError
from gguf_runtime.kv import KVCache, KVPool

GREEDY = SamplingParams(temperature=0, max_tokens=12)
TOPICS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a land far away,",
          "List three colors:", "1, 2, 3, 4,", "The quick brown fox", "Water boils at", "import numpy as np\n",
          "My favourite recipe", "SELECT name FROM", "Dear Sir or Madam,", "In 1969 the first",
          "Photosynthesis is", "Rust and Python differ", "The weather today", "Q: What is 2+2?\nA:"]


def _prompts(n: int) -> list[str]:
    """Prompts of very different lengths (4 to ~300 tokens) that share no leading block."""
    return [f"{i}. " + (TOPICS[i % len(TOPICS)] + " ") * (1 + (i * 11) % 37) for i in range(n)]


@pytest.fixture(scope="module")
def llm(smollm2_path):
    return LLM(smollm2_path, n_ctx=512, max_num_seqs=8, kv_cache_tokens=4096)


def _alone(llm: LLM, prompt, params: SamplingParams, stream: int = 0):
    """The prompt as the engine's only request, without reusing pooled blocks: its sample `stream`."""
    llm.reset()
    llm.engine.prefix_caching = False
    try:
        return llm.generate(prompt, dataclasses.replace(params, n=stream + 1))[0].outputs[stream]
    finally:
        llm.engine.prefix_caching = True


def _drain(gen):
    """Run a generate_stream generator to its end; its return value (the Generation)."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def test_sixteen_prompts_batched_equal_one_at_a_time(llm):
    prompts = _prompts(16)
    lengths = [len(llm.prompt_token_ids(p)) for p in prompts]
    assert min(lengths) < 16 and max(lengths) > 250
    batched = llm.generate(prompts, GREEDY)
    stats = llm.batch_stats
    assert stats.max_running == 8 and stats.decode_steps < sum(len(o.outputs[0].token_ids) for o in batched)
    for prompt, out in zip(prompts, batched):
        alone = _alone(llm, prompt, GREEDY)
        assert out.outputs[0].token_ids == alone.token_ids, prompt[:40]
        assert out.outputs[0].text == alone.text and out.outputs[0].finish_reason == alone.finish_reason


def test_more_prompts_than_blocks_wait_and_finish(smollm2_path):
    # 11 blocks of 32 tokens; each request reserves 5 (its worst case), so most of the 6 must wait
    llm = LLM(smollm2_path, n_ctx=256, kv_cache_tokens=320, max_num_seqs=8)
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    prompts = [f"Story {i}: " + TOPICS[i] * 3 for i in range(6)]
    outs = llm.generate(prompts, params)
    assert 2 <= llm.batch_stats.max_running < 6
    assert all(len(o.outputs[0].token_ids) == 40 for o in outs)
    m = llm.stats
    assert m.kv_blocks_used == 0 and m.kv_blocks_free == m.kv_blocks_total  # every block came back
    for prompt, out in zip(prompts, outs):
        assert out.outputs[0].token_ids == _alone(llm, prompt, params).token_ids


def test_n_samples_compute_the_prompt_once_and_differ_by_seed(llm):
    prompt = _prompts(3)[2]
    n_prompt = len(llm.prompt_token_ids(prompt))
    params = SamplingParams(n=4, temperature=1.0, seed=7, max_tokens=10, ignore_eos=True)
    llm.reset()
    llm.engine.prefix_caching = False  # count a cold prompt
    try:
        out = llm.generate(prompt, params)[0]
    finally:
        llm.engine.prefix_caching = True
    stats = llm.batch_stats
    assert stats.prompt_tokens_evaluated == n_prompt  # once, not four times
    assert stats.decode_tokens == 4 * (10 - 1)
    samples = [o.token_ids for o in out.outputs]
    assert len({tuple(s) for s in samples}) > 1
    for i, sample in enumerate(samples):  # sample i is what the one-at-a-time path draws from stream i
        assert sample == _alone(llm, prompt, params, stream=i).token_ids


def test_repeated_prefix_is_reused_across_calls(llm):
    system = "You are a careful assistant who answers in one short sentence. " * 4
    llm.generate(system + "What is the capital of Italy?", GREEDY)
    out = llm.generate(system + "Name a prime number.", GREEDY)[0]
    stats = llm.batch_stats
    n_system = len(llm.prompt_token_ids(system))
    assert stats.prompt_tokens - stats.prompt_tokens_evaluated >= n_system - 32  # whole blocks of the system prompt
    # prefill rows equal decode rows (integer GEMM, per-row attention), so reusing blocks changes nothing
    np.testing.assert_array_equal(out.outputs[0].token_ids,
                                  _alone(llm, system + "Name a prime number.", GREEDY).token_ids)


def test_pool_fork_copy_on_write_and_accounting():
    pool = KVPool(n_layers=2, n_kv_heads=1, head_dim=32, n_blocks=6, block_tokens=4, kv_type="f32")
    a = KVCache(pool, n_ctx=16)
    rows = np.arange(2 * 6 * 32, dtype=np.float32).reshape(2, 6, 1, 32)
    a.prepare(6)
    for layer in range(2):
        a.store(layer, 0, rows[layer], -rows[layer])
    a.commit(range(6))
    b = a.fork()
    assert pool.n_used == 2 and list(pool.groups[0].refs[a.blocks]) == [2, 2]
    b.prepare(1)  # writes into the shared half-full block: b gets its own copy of it
    assert a.blocks[0] == b.blocks[0] and a.blocks[1] != b.blocks[1] and pool.n_used == 3
    np.testing.assert_array_equal(b.rows(1, 6)[0], a.rows(1)[0])
    np.testing.assert_array_equal(a.rows(0)[1][0], -rows[0, :, 0])
    with pytest.raises(PoolFullError):
        KVCache(pool, 64).prepare(64)  # 16 blocks from a pool of 6
    a.release()
    b.release()
    assert pool.n_used == 0 and int(pool.groups[0].refs.sum()) == 0


def _resident_bytes(a: np.ndarray) -> int:
    """Bytes of the mappings under array a that are in memory (/proc/self/smaps' Rss)."""
    start, end, total, overlaps = a.ctypes.data, a.ctypes.data + a.nbytes, 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            key = line.split(None, 1)[0]
            if not key.endswith(":"):  # a mapping's first line: lo-hi perms offset dev inode [path]
                lo, hi = (int(x, 16) for x in key.split("-"))
                overlaps = lo < end and hi > start
            elif key == "Rss:" and overlaps:
                total += int(line.split()[1]) * 1024
    return total


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps (Linux only)")
def test_the_pool_commits_only_the_pages_its_blocks_use(smollm2_path):
    """A first token writes one block of every layer's K and V, and only those pages become memory: NumPy
    advises 2 MiB huge pages for a large np.zeros, which made it 2 MiB per layer for K and for V (~120 MB
    at n_ctx 2048 on SmolLM2, and a slow first forward)."""
    llm = LLM(smollm2_path, n_ctx=2048)
    llm.generate("Hi", SamplingParams(temperature=0, max_tokens=1))
    group = llm.engine.kv.pool.groups[0]
    n_layers, block_bytes = group.k.shape[0], group.k[0, 0].nbytes
    for store in (group.k, group.v):
        assert store.nbytes > 32 * n_layers * block_bytes  # a pool much larger than what is written
        assert _resident_bytes(store) <= n_layers * (block_bytes + 8192)  # a block a layer, plus page edges


@pytest.mark.parametrize("kv_type", ["f16", "q8_0"])
def test_smaller_cache_types_stay_close_to_f32(smollm2_path, llm, kv_type):
    ids = llm.prompt_token_ids(_prompts(5)[4])[:96]
    ref = llm.logits(ids)  # the default cache: f32
    other = LLM(smollm2_path, n_ctx=128, kv_cache_dtype=kv_type)
    got = other.logits(ids)
    # measured on these 96 positions: f16 vs f32 mean 0.16, max 1.4; q8_0 0.17, 1.2; q4_0 0.99, 6.7
    assert np.abs(got - ref).mean() < 0.3 and np.abs(got - ref).max() < 2.4
    assert (got.argmax(-1) == ref.argmax(-1)).mean() > 0.95
    assert other.kv_bytes_per_token / llm.kv_bytes_per_token == {"f16": 0.5, "q8_0": 34 / 128}[kv_type]


def test_state_round_trip_and_refusals(llm, smollm2_path, tmp_path):
    prompt = llm.prompt_token_ids(_prompts(7)[6])
    params = SamplingParams(temperature=0, max_tokens=8)
    llm.reset()
    _drain(llm.generate_stream(prompt, SamplingParams(max_tokens=1)))  # the conversation cache holds the prompt
    path = tmp_path / "state.kv"
    llm.save_state(path)
    expected = _drain(llm.generate_stream(prompt, params)).token_ids

    fresh = LLM(smollm2_path, n_ctx=512, enable_prefix_caching=False)
    assert fresh.load_state(path) == prompt
    resumed = _drain(fresh.generate_stream(prompt, params))
    assert resumed.stats.reused_tokens == len(prompt) - 1 and resumed.token_ids == expected

    raw = path.read_bytes()
    for name, data in [("truncated", raw[:-100]), ("garbage", b"not a state file"),
                       ("huge", raw[:12] + b'{"version": 1, "n_tokens": 1000000000}'.ljust(len(raw) - 12))]:
        bad = tmp_path / name
        bad.write_bytes(data)
        before = fresh.conversation_tokens
        with pytest.raises(StateFileError):
            fresh.load_state(bad)
        assert fresh.conversation_tokens == before  # a refused file changes nothing
    with pytest.raises(StateFileError, match="kv_type"):
        LLM(smollm2_path, n_ctx=512, kv_cache_dtype="q8_0").load_state(path)
    with pytest.raises(StateFileError, match="fit a context"):
        LLM(smollm2_path, n_ctx=64).load_state(path)


@pytest.mark.parametrize("name", ["llama-f32", "llama-q8_0", "gemma3-f32", "qwen3moe-f32"])
def test_a_pass_mixing_decode_rows_and_a_prompt_chunk_equals_separate_passes(name, tmp_path):
    """The engine runs decode rows, verify rows and prompt chunks in one pass: every sequence's logits and
    stored K/V are bit for bit what its own pass gives, float weights (BLAS for long runs) included."""
    from tiny_model import ARCH_CASES, write_tiny_model

    llm = LLM(write_tiny_model(tmp_path / "m.gguf", **ARCH_CASES[name]), n_ctx=128, n_threads=2)
    runner, rng = llm.engine.runner, np.random.default_rng(5)
    prompts = [rng.integers(1, runner.n_vocab, n).tolist() for n in (10, 12, 40)]
    steps = [[int(rng.integers(1, runner.n_vocab))], rng.integers(1, runner.n_vocab, 3).tolist()]

    def sequences():
        seqs = [llm.engine.kv.new_sequence() for _ in prompts]
        for kv, prompt in zip(seqs[:2], prompts):
            runner.evaluate(kv, prompt)
        return seqs

    alone = sequences()
    want = [runner.forward(alone[:1], [steps[0]]), runner.forward(alone[1:2], [steps[1]], "all"),
            runner.forward(alone[2:], [prompts[2]])]
    mixed = sequences()
    got = runner.forward(mixed, steps + [prompts[2]], [1, 3, 1])
    assert got.shape == (5, runner.n_vocab)
    for a, b in zip([got[:1], got[1:4], got[4:]], want):
        assert np.array_equal(a, b), f"max |diff| {np.abs(a - b).max()}"
    nxt = [[int(rng.integers(1, runner.n_vocab))] for _ in prompts]  # what the mixed pass stored is read next
    assert np.array_equal(runner.forward(mixed, nxt), runner.forward(alone, nxt))
    for kv in alone + mixed:
        kv.release()
