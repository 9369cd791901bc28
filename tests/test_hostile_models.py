"""Hostile model files, templates and state files: the loader validates like llama.cpp's, the template sandbox
has budgets, and whatever the input, the outcome is a clean project error or a correct run.

The short fuzz campaign here is the CI budget of tests/fuzz_harness.py (`make fuzz` runs the long one);
the property tests below mutate in-process with hypothesis; the rest pin down one validation each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFValueType as VT
from hypothesis import HealthCheck, given, settings, strategies as st

import fuzz_harness
from hostile_inputs import GGUFModel, join_state, resize_vocab, split_state
from tiny_model import write_tiny_model

from gguf_runtime.api import LLM
from gguf_runtime.chat_template import ChatTemplate, ChatTemplateError
from gguf_runtime.config import ConfigError, ModelConfig
from gguf_runtime.gguf_file import GGUFError, GGUFFile
from gguf_runtime.kv_cache import KVCacheSizeError, KVPool
from gguf_runtime.metadata import MetadataError
from gguf_runtime.sampling import SamplingParams
from gguf_runtime.state import StateFileError
from gguf_runtime.tokenizer import Tokenizer, TokenizerError

PROJECT_ERRORS = (GGUFError, ConfigError, TokenizerError, ChatTemplateError, StateFileError)
GREEDY = SamplingParams(max_tokens=2, temperature=0.0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> GGUFModel:
    return GGUFModel.read(write_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.gguf", seed=1))


def _write(tmp_path: Path, model: GGUFModel, name: str = "m.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(model.to_bytes())
    return path


# ---- the campaign -------------------------------------------------------------------------------------------

def test_short_fuzz_campaign_has_no_failures():
    """Every category (all ~90 hostile templates on two architectures included), each case in a watched
    worker under a 2 GiB limit and 10 s: no crash, hang, giant allocation, foreign exception, unclear message,
    malformed file accepted, or KV cache changed by a refused state file."""
    specs = fuzz_harness.plan(n_gguf=320, n_state=40, seed=7)
    report = fuzz_harness.run_campaign(specs, seed=7, jobs=2, cwd=Path(__file__).resolve().parent.parent)
    assert set(report.counts) >= {"truncation", "bitflip", "huge_count", "wrong_type", "shape", "vocab",
                                  "nonfinite", "template", "state"}
    assert report.failures() == 0, report.table() + "\n" + json.dumps(report.to_json()["examples"], indent=1)


# ---- properties ---------------------------------------------------------------------------------------------

_values = st.one_of(st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=8), st.booleans(), st.lists(st.integers(0, 10), max_size=3))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["block_count", "embedding_length", "feed_forward_length", "attention.head_count",
                            "attention.head_count_kv", "attention.key_length", "rope.dimension_count",
                            "rope.freq_base", "attention.layer_norm_rms_epsilon", "context_length",
                            "rope.scaling.factor", "vocab_size"]), value=_values)
def test_any_hyperparameter_value_is_accepted_or_refused_by_name(tiny, key, value):
    md = {e.key: e.value for e in tiny.entries}
    md[f"llama.{key}"] = value
    try:
        config = ModelConfig.from_metadata(md, 24)
    except (MetadataError, ConfigError) as e:
        assert key in str(e) or "head" in str(e) or "rope" in str(e), str(e)
        return
    assert config.n_heads % config.n_kv_heads == 0 and config.head_dim > 0
    assert np.isfinite(config.rope_base) and config.rope_base > 0 and config.rms_eps > 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["tokens", "scores", "token_type", "merges", "bos_token_id", "eos_token_id",
                            "add_bos_token", "pre", "model", "padding_token_id"]), value=_values)
def test_any_tokenizer_value_is_accepted_or_refused(tiny, key, value):
    md = {e.key: e.value for e in tiny.entries}
    md[f"tokenizer.ggml.{key}"] = value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            tok = Tokenizer.from_metadata(md)
        except (MetadataError, TokenizerError):
            return
    assert tok.decode(tok.encode("abc", add_special=False)) == "abc" or tok.n_vocab != 24


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupted_tiny_files_load_only_as_valid_or_give_a_project_error(tiny, tmp_path, data):
    raw = bytearray(tiny.to_bytes())
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, 2000))
        raw[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.sampled_from([len(raw), data.draw(st.integers(0, len(raw)))]))
    path = tmp_path / "c.gguf"
    path.write_bytes(bytes(raw[:cut]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            llm = LLM(str(path), n_ctx=64, n_threads=1)
            llm.generate("ab", GREEDY)
        except PROJECT_ERRORS as e:
            assert "\n" not in str(e)


_json = st.recursive(st.none() | st.booleans() | st.integers(-2, 2**40) | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                     max_leaves=8)


@pytest.fixture(scope="module")
def state_llm(tmp_path_factory):
    d = tmp_path_factory.mktemp("state")
    llm = LLM(str(write_tiny_model(d / "t.gguf", seed=2)), n_ctx=64, n_threads=1)
    for _ in llm.generate_stream("abcdef", SamplingParams(max_tokens=3, temperature=0.0)):
        pass
    llm.save_state(d / "good.state")
    return llm, (d / "good.state").read_bytes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["version", "model", "kv_type", "n_tokens", "n_layers", "n_kv_heads", "row_bytes"]),
       value=_json)
def test_state_header_values_are_refused_without_touching_the_cache(state_llm, tmp_path, key, value):
    llm, good = state_llm
    header, body = split_state(good)
    if type(value) is type(header[key]) and value == header[key]:
        return
    header[key] = value
    path = tmp_path / "s.state"
    path.write_bytes(join_state(header, body))
    pool = llm.engine.kv.pool
    before = ([(g.k.tobytes(), g.v.tobytes()) for g in pool.groups], llm.conversation_tokens)
    with pytest.raises(StateFileError):
        llm.load_state(path)
    assert ([(g.k.tobytes(), g.v.tobytes()) for g in pool.groups], llm.conversation_tokens) == before


# ---- one validation each -----------------------------------------------------------------------------------

def test_tensor_shape_contradicting_hyperparameters_names_tensor_and_shapes(tiny, tmp_path):
    m = tiny.copy()
    up = m.tensor("blk.0.ffn_up.weight")
    up.ne, up.data = [64, 48], up.data[: len(up.data) // 2]  # the out-of-bounds swiglu
    with pytest.raises(GGUFError, match=r"^tensor blk\.0\.ffn_up\.weight: shape \[64, 48\] \(ggml ne order\), "
                                        r"expected \[64, 96\]$"):
        LLM(str(_write(tmp_path, m)), n_ctx=64)


def test_tensors_beyond_block_count_are_refused(tiny, tmp_path):
    m = tiny.copy()
    m.set("llama.block_count", VT.UINT32, 1)
    with pytest.raises(GGUFError, match="wrong number of tensors: llama with 1 layers uses 12, the file has 21"):
        LLM(str(_write(tmp_path, m)), n_ctx=64)


def test_trailing_unit_dims_are_the_same_shape(tiny, tmp_path):
    m = tiny.copy()
    m.tensor("blk.1.attn_norm.weight").ne.append(1)
    m.tensor("blk.1.ffn_up.weight").ne.append(1)
    reference = LLM(str(_write(tmp_path, tiny, "a.gguf")), n_ctx=64).generate("ab", GREEDY)[0].outputs[0].token_ids
    assert LLM(str(_write(tmp_path, m)), n_ctx=64).generate("ab", GREEDY)[0].outputs[0].token_ids == reference


def test_wrong_typed_key_is_named(tiny, tmp_path):
    m = tiny.copy()
    m.set("llama.block_count", VT.STRING, "2")
    with pytest.raises(MetadataError, match="^key llama.block_count: expected uint32, got string$"):
        LLM(str(_write(tmp_path, m)), n_ctx=64)


def test_vocab_disagreeing_with_embedding_rows(tiny, tmp_path):
    m = tiny.copy()
    m.set("tokenizer.ggml.tokens", VT.ARRAY, list(m.get("tokenizer.ggml.tokens").value)[:-1], VT.STRING)
    m.set("tokenizer.ggml.token_type", VT.ARRAY, np.ones(23, np.int32), VT.INT32)
    with pytest.raises(GGUFError, match=r"tensor token_embd.weight: shape \[64, 24\] .* expected \[64, 23\]"):
        LLM(str(_write(tmp_path, m)), n_ctx=64)


def test_special_id_out_of_range_is_ignored_with_a_warning(tiny, tmp_path):
    m = tiny.copy()
    m.set("tokenizer.ggml.eos_token_id", VT.UINT32, 10_000)
    with pytest.warns(UserWarning, match="eos_token_id = 10000 is outside the vocabulary of 24 tokens; ignored"):
        llm = LLM(str(_write(tmp_path, m)), n_ctx=64)
    assert llm.tokenizer.eos_id == 11 or llm.tokenizer.eos_id is None or llm.tokenizer.eos_id < 24
    assert llm.render_chat([{"role": "user", "content": "hi"}])


def test_invalid_token_type_and_bad_byte_token(tiny):
    md = {e.key: e.value for e in tiny.entries}
    md["tokenizer.ggml.token_type"] = np.array([3] + [1] * 22 + [9], np.int32)
    with pytest.raises(TokenizerError, match=r"token_type\[23\] is 9, not a token type \(0..6\)"):
        Tokenizer.from_metadata(md)
    md["tokenizer.ggml.token_type"] = np.array([3, 6] + [1] * 22, np.int32)
    with pytest.raises(TokenizerError, match="token 1 'a' has type BYTE but is not written <0xNN>"):
        Tokenizer.from_metadata(md)


def test_many_long_control_tokens_split_iteratively(tiny, tmp_path):
    m = tiny.copy()
    base = list(m.get("tokenizer.ggml.tokens").value)
    control = ["<" * (i + 1) for i in range(1600)]
    import random
    resize_vocab(m, base + control, [3] + [1] * 23 + [3] * 1600, random.Random(0))
    llm = LLM(str(_write(tmp_path, m)), n_ctx=64)
    text = "a" + "<" * 1700 + "b" * 200
    assert llm.detokenize(llm.tokenize(text * 3, parse_special=True)) == text * 3


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_paths_that_are_not_regular_files_are_refused_at_once(tmp_path, kind):
    path = tmp_path / kind
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        path = Path("/dev/zero")
    result: list = []
    t = threading.Thread(target=lambda: result.append(_error_of(lambda: GGUFFile(path))), daemon=True)
    t.start()
    t.join(5)
    assert result, "GGUFFile blocked"
    assert isinstance(result[0], (GGUFError, IsADirectoryError)), result


def _error_of(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        return e
    return None


def test_kv_pool_bigger_than_memory_is_refused_before_allocating():
    with pytest.raises(KVCacheSizeError, match=r"the KV cache for \d+ tokens \(f32\) needs .* GiB, more than"):
        KVPool(n_layers=512, n_kv_heads=1024, head_dim=1024, n_blocks=64)


def test_refused_template_falls_back_and_complete_still_runs(tiny, tmp_path):
    m = tiny.copy()
    m.set("tokenizer.chat_template", VT.STRING, "{% for %}")
    llm = LLM(str(_write(tmp_path, m)), n_ctx=64)
    assert llm.generate("ab", GREEDY)[0].outputs[0].token_ids
    with pytest.warns(UserWarning, match=r"the model's chat template is refused \(chat template syntax error"):
        template = llm.chat_template
    assert template.is_fallback and "ChatML fallback" in template.refusal
    assert llm.render_chat([{"role": "user", "content": "hi"}]).startswith("<|im_start|>user\nhi")


@pytest.mark.parametrize("source, reason", [
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "steps|longer than"),
    ("{{ ((10**1000)**1000)**1000 }}", "integer of more than 4096 bits"),
    ("{{ 'x'|center(3000000000) }}", "width or count of 3000000000"),
    ("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
     "would build a value of"),
    ("{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ns.l }}",
     "printing a value of more than"),
    ("{{ {'a': 1}|tojson(indent=3000000000) }}", "width or count"),
    ("{{ '{:>3000000000}'.format('x') }}", "format width or precision of 3000000000"),
    ("{{ lipsum(100000, false, 100000, 100000) }}", "lipsum"),
])
def test_template_budgets_give_a_clear_error(source, reason):
    with pytest.raises(ChatTemplateError, match=reason) as err:
        ChatTemplate(source).render([{"role": "user", "content": "hi"}])
    assert "\n" not in str(err.value)


def test_template_size_limit():
    with pytest.raises(ChatTemplateError, match="longer than the 262144 allowed"):
        ChatTemplate("x" * 3_000_000)


def test_kernels_under_numba_boundscheck_see_only_loader_shapes(tmp_path):
    """The elementwise kernels compiled with NUMBA_BOUNDSCHECK=1 (in a subprocess with its own cache): with
    the shapes the loader guarantees they run; with the short norm weight the loader now refuses, the bounds
    check would have caught the out-of-bounds read."""
    code = (
        "import numpy as np\n"
        "from gguf_runtime.ops import gated_rows, gelu_table, rms_norm\n"
        "x = np.ones((2, 64), np.float32)\n"
        "rms_norm(x, np.ones(64, np.float32), 1e-5, np.empty_like(x))\n"
        "gated_rows(0, np.ones((2, 96), np.float32), np.ones((2, 96), np.float32), np.empty((2, 96), np.float32),\n"
        "           gelu_table())\n"
        "try:\n"
        "    rms_norm(x, np.ones(32, np.float32), 1e-5, np.empty_like(x))\n"
        "except IndexError:\n"
        "    print('caught')\n")
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "caught"
