"""The engine's scheduler and finish rules with a stand-in model runner: admission, waiting for KV blocks,
aborts, stop strings across tokens, min_tokens, limits and context shift. No model runs here."""

from __future__ import annotations

import numpy as np
import pytest

from gguf_runtime.engine import Engine
from gguf_runtime.engine.output import OutputState
from gguf_runtime.engine.runner import wanted_rows
from gguf_runtime.errors import ContextLengthError, KVCapacityError
from gguf_runtime.gguf_file import GGUFFile
from gguf_runtime.kv import ForwardBatch, KVPool
from gguf_runtime.sampling import SampledToken, SamplingParams
from gguf_runtime.tokenizer import StreamDecoder, Tokenizer

from tiny_model import write_tiny_model

EOS = 0  # the tiny vocabulary: <eos>, then the letters a.. (token t is chr(ord("a") + t - 1))
GREEDY = SamplingParams(temperature=0, max_tokens=6)


def letters(text: str) -> list[int]:
    return [ord(c) - ord("a") + 1 for c in text]


class FakeRunner:
    """Stands in for ModelRunner: stores nothing, and its logits make `next_token(last token)` the argmax."""

    def __init__(self, n_vocab: int, next_token, n_batch: int = 4):
        self.n_vocab, self.next_token, self.n_batch = n_vocab, next_token, n_batch
        self.tokens_evaluated = 0
        self.passes: list[list[int]] = []  # rows per sequence of every forward pass

    def forward(self, sequences, token_lists, logits="last"):
        batch = ForwardBatch.build(sequences, token_lists)  # the real block accounting
        batch.commit()
        self.tokens_evaluated += len(batch.tokens)
        self.passes.append(batch.runs)
        if not isinstance(logits, (str, type(None))):
            logits = wanted_rows(batch.runs, logits)
        if logits is None:
            return None
        rows = batch.tokens[logits] if isinstance(logits, np.ndarray) else \
            batch.tokens if logits == "all" else batch.tokens[batch.last_rows]
        out = np.zeros((len(rows), self.n_vocab), np.float32)
        out[np.arange(len(rows)), [self.next_token(int(t)) for t in rows]] = 10.0
        return out

    def shift_keys(self, layer, keys, delta, n_ctx):
        pass


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = write_tiny_model(tmp_path_factory.mktemp("tok") / "tiny.gguf", n_vocab=27)
    return Tokenizer.from_metadata(GGUFFile(path).metadata)


def alphabet(t: int) -> int:
    """a b c ... z, then a again (never EOS)."""
    return t % 26 + 1


def make_engine(tokenizer, next_token=alphabet, n_blocks=32, n_ctx=64, max_num_seqs=8, n_batch=4):
    pool = KVPool(n_layers=1, n_kv_heads=1, head_dim=32, n_blocks=n_blocks, block_tokens=4)
    runner = FakeRunner(tokenizer.n_vocab, next_token, n_batch)
    return Engine(runner, pool, tokenizer, n_ctx, max_num_seqs=max_num_seqs), runner


def run(engine) -> dict[str, list]:
    """Step to the end; every StepOutput by request id, in order."""
    seen: dict[str, list] = {}
    while engine.has_unfinished():
        for out in engine.step():
            seen.setdefault(out.request_id, []).append(out)
    return seen


def text_of(outs) -> str:
    return "".join(o.new_text for o in outs)


def test_requests_run_together_and_give_every_block_back(tokenizer):
    engine, runner = make_engine(tokenizer)
    for i, prompt in enumerate(["abc", "hello", "xy"]):
        engine.add_request(str(i), letters(prompt), GREEDY)
    seen = run(engine)
    assert text_of(seen["0"]) == "defghi" and text_of(seen["1"]) == "pqrstu" and text_of(seen["2"]) == "zabcde"
    assert all(outs[-1].finish_reason == "length" and outs[-1].completion_tokens == 6 for outs in seen.values())
    assert max(len(runs) for runs in runner.passes) == 3  # decoded in one batch
    m = engine.metrics()
    assert m.kv_blocks_used == 0 and m.requests_finished_total == 3 and m.generation_tokens_total == 18
    assert m.prompt_tokens_total == 10


def test_a_request_waits_while_the_pool_is_full(tokenizer):
    # 8 blocks of 4 tokens; each request may grow to 3 + 12 = 15 tokens: 4 blocks + 1 copy-on-write = 5
    engine, runner = make_engine(tokenizer, n_blocks=8)
    params = SamplingParams(temperature=0, max_tokens=12)
    engine.add_request("first", letters("abc"), params)
    engine.add_request("second", letters("abc"), params)
    running = []
    while engine.has_unfinished():
        engine.step()
        m = engine.metrics()
        running.append(m.running)
        assert m.kv_blocks_used <= 8
    assert max(running) == 1 and engine.metrics().requests_finished_total == 2
    with pytest.raises(KVCapacityError, match="8"):  # could never fit, even alone: refused at once
        engine.add_request("huge", letters("abc"), SamplingParams(max_tokens=60))
    assert not engine.has_unfinished() and engine.metrics().kv_blocks_used == 0


def test_abort_during_prefill_frees_blocks_at_once(tokenizer):
    engine, _ = make_engine(tokenizer, n_batch=4)
    engine.add_request("long", letters("abcdefghijklmnopqrst"), GREEDY)  # 20 tokens: 5 chunks of 4
    engine.step()
    assert engine.metrics().kv_blocks_used > 0
    assert engine.abort_request("long")
    assert engine.metrics().kv_blocks_used == 0 and not engine.abort_request("long")
    (out,) = engine.step()
    assert out.finished and out.finish_reason == "abort" and out.completion_tokens == 0
    assert not engine.has_unfinished() and engine.metrics().requests_aborted_total == 1


def test_abort_during_decode_keeps_what_was_streamed(tokenizer):
    engine, _ = make_engine(tokenizer)
    engine.add_request("a", letters("ab"), SamplingParams(temperature=0, max_tokens=40))
    engine.add_request("b", letters("ab"), SamplingParams(temperature=0, max_tokens=4))
    streamed = []
    for _ in range(5):
        streamed += [o for o in engine.step() if o.request_id == "a"]
    assert text_of(streamed) == "cdefg"
    assert engine.abort_request("a")
    assert engine.metrics().running == 0  # "b" finished after 4 tokens; "a" is gone
    assert engine.metrics().kv_blocks_used == 0
    (out,) = engine.step()
    assert out.finish_reason == "abort" and out.generation.text == "cdefg" and out.completion_tokens == 5


def test_stop_string_split_over_tokens_is_held_back_and_cut(tokenizer):
    engine, _ = make_engine(tokenizer)
    engine.add_request("s", letters("a"), SamplingParams(temperature=0, max_tokens=20, stop=["efg", "zz"]))
    outs = run(engine)["s"]
    assert [o.new_text for o in outs] == ["b", "c", "d", "", "", ""]  # "e", "ef" waited: they could start "efg"
    assert outs[-1].finish_reason == "stop" and outs[-1].stop_reason == "efg"
    assert outs[-1].generation.text == "bcd" and outs[-1].generation.token_ids == letters("bcdefg")
    engine.add_request("t", letters("a"), SamplingParams(temperature=0, max_tokens=20, stop=["efg"],
                                                         include_stop_str_in_output=True))
    assert text_of(run(engine)["t"]) == "bcdefg"


def test_min_tokens_forbids_eos_until_reached(tokenizer):
    eos_first = lambda t: EOS if t != EOS else 1  # noqa: E731  the model wants to stop at once
    engine, _ = make_engine(tokenizer, next_token=eos_first)
    engine.add_request("now", letters("ab"), SamplingParams(temperature=0, max_tokens=10))
    engine.add_request("later", letters("ab"), SamplingParams(temperature=0, max_tokens=10, min_tokens=3))
    engine.add_request("never", letters("ab"), SamplingParams(temperature=0, max_tokens=5, ignore_eos=True))
    seen = run(engine)
    now, later, never = (seen[k][-1] for k in ("now", "later", "never"))
    assert now.finish_reason == "stop" and now.stop_reason == EOS and now.generation.token_ids == []
    assert later.finish_reason == "stop" and later.stop_reason == EOS and len(later.generation.token_ids) == 3
    assert EOS not in later.generation.token_ids
    assert never.finish_reason == "length" and len(never.generation.token_ids) == 5


def test_full_context_shifts_only_when_max_tokens_asks_for_more(tokenizer):
    engine, _ = make_engine(tokenizer, n_ctx=16)
    engine.add_request("shift", letters("abcd"), SamplingParams(temperature=0, max_tokens=40), n_keep=2)
    engine.add_request("until_full", letters("abcd"), SamplingParams(temperature=0, max_tokens=None))
    seen = run(engine)
    assert seen["shift"][-1].finish_reason == "length" and seen["shift"][-1].completion_tokens == 40
    assert seen["until_full"][-1].finish_reason == "length" and seen["until_full"][-1].completion_tokens == 12
    assert engine.metrics().kv_blocks_used == 0


def test_bad_requests_are_refused_before_anything_changes(tokenizer):
    engine, _ = make_engine(tokenizer, n_ctx=16)
    engine.add_request("x", letters("ab"), GREEDY)
    with pytest.raises(ValueError, match="already"):
        engine.add_request("x", letters("ab"), GREEDY)
    with pytest.raises(ContextLengthError):
        engine.add_request("y", letters("abcdefghijklmnop"), GREEDY)
    with pytest.raises(ValueError, match="vocabulary"):
        engine.add_request("z", [10 ** 6], GREEDY)
    assert engine.metrics().waiting == 1
    assert len(run(engine)) == 1


def test_n_samples_fork_the_prompt(tokenizer):
    engine, runner = make_engine(tokenizer)
    engine.add_request("n", letters("abcdefgh"), SamplingParams(n=3, temperature=0, max_tokens=4))
    seen = run(engine)["n"]
    finals = [o for o in seen if o.finished]
    assert sorted(o.index for o in finals) == [0, 1, 2]
    assert all(o.generation.token_ids == letters("ijkl") for o in finals)
    assert sum(sum(runs) for runs in runner.passes) == 8 + 3 * 3  # the prompt ran once


def test_output_state_holds_back_half_characters_and_flushes_at_the_end(tokenizer):
    out = OutputState(SamplingParams(max_tokens=3, stop=["xyz"]), tokenizer.eog_ids,
                      StreamDecoder(tokenizer), limit=3)
    deltas = [out.push(SampledToken(t)) for t in letters("axy")]
    assert deltas == ["a", "", ""] and out.done and out.result.finish_reason == "length"
    assert out.close() == "xy" and out.result.text == "axy"
