"""`gguf-runtime complete`: the same text as LLM.generate, stdin, --json, stop strings, --chat, and one-line
errors with their exit codes, all through real subprocesses."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from gguf_runtime.gguf_file import GGUFFile
from gguf_runtime.sampling import SamplingParams

PROMPT = "The three primary colours are"
N = 24
GREEDY = ["--temperature", "0", "-n", str(N)]


def run_cli(*args: str | os.PathLike, stdin: str | None = None, env: dict | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gguf_runtime", *map(str, args)], input=stdin,
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def llm(smollm2_path):
    from gguf_runtime.api import LLM

    return LLM(smollm2_path)


@pytest.fixture(scope="module")
def reference(llm):
    """What the Python API generates for PROMPT with the CLI's greedy settings (a RequestOutput)."""
    params = SamplingParams.llama_cpp_defaults(temperature=0, max_tokens=N)
    return llm.generate(PROMPT, params)[0]


def assert_one_line_error(result: subprocess.CompletedProcess, *expected: str, code: int = 2) -> None:
    assert result.returncode == code, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in expected:
        assert text in lines[0], lines[0]


def test_greedy_output_equals_llm_generate(smollm2_path, reference):
    result = run_cli("complete", "-m", smollm2_path, *GREEDY, PROMPT)
    assert result.returncode == 0, result.stderr
    completion = reference.outputs[0]
    assert completion.finish_reason == "length" and len(completion.token_ids) == N
    assert result.stdout == completion.text
    assert result.stderr == ""  # no spinner, no stats: stderr is not a terminal and --verbose is off


def test_prompt_from_stdin(smollm2_path, reference):
    result = run_cli("complete", "-m", smollm2_path, *GREEDY, stdin=PROMPT + "\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == reference.outputs[0].text


def test_json_output(smollm2_path, reference):
    result = run_cli("complete", "-m", smollm2_path, *GREEDY, "--json", "--verbose", PROMPT)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("load:")  # --verbose stats go to stderr; stdout is only the JSON object
    out = json.loads(result.stdout)
    assert set(out) == {"text", "token_ids", "finish_reason", "stop_reason", "stats"}
    completion = reference.outputs[0]
    assert (out["text"], out["token_ids"], out["finish_reason"], out["stop_reason"]) == \
           (completion.text, completion.token_ids, "length", None)
    stats = out["stats"]
    assert (stats["prompt_tokens"], stats["reused_tokens"], stats["generated_tokens"]) == \
           (len(reference.prompt_token_ids), 0, N)
    for key in ("prefill_seconds", "decode_seconds", "prompt_tokens_per_second", "decode_tokens_per_second",
                "load_seconds", "first_text_seconds"):
        assert isinstance(stats[key], float) and stats[key] > 0, key


def test_stop_string_ends_the_text_before_it(smollm2_path, reference):
    text = reference.outputs[0].text
    stop = text.split()[len(text.split()) // 2]
    expected = text[:text.index(stop)]
    result = run_cli("complete", "-m", smollm2_path, *GREEDY, "--stop", stop, "--stop", "not in the text",
                     "--json", PROMPT)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert (out["text"], out["finish_reason"], out["stop_reason"]) == (expected, "stop", stop)
    plain = run_cli("complete", "-m", smollm2_path, *GREEDY, "--stop", stop, PROMPT)
    assert plain.stdout == expected


def test_chat_flag_applies_the_template(smollm2_path, llm):
    messages = [{"role": "system", "content": "Answer in one word."},
                {"role": "user", "content": "What colour is the sky?"}]
    expected = llm.chat(messages, SamplingParams.llama_cpp_defaults(temperature=0, max_tokens=12))[0].outputs[0]
    result = run_cli("complete", "-m", smollm2_path, "--temperature", "0", "-n", "12", "--system",
                     messages[0]["content"], messages[1]["content"], "--verbose")
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected.text
    assert "decode:" in result.stderr and "tok/s" in result.stderr  # --verbose stats, on stderr only


# -- errors: one line on stderr, exit 2, no traceback ------------------------------------------------------

def _patched_copy(src: Path, dst: Path, old: bytes, new: bytes) -> Path:
    data = src.read_bytes()
    assert data.count(old) == 1 and len(old) == len(new)
    dst.write_bytes(data.replace(old, new))
    return dst


def _gguf_string(text: str) -> bytes:
    return struct.pack("<Q", len(text)) + text.encode()


def test_missing_model(tmp_path):
    assert_one_line_error(run_cli("complete", "-m", tmp_path / "missing.gguf", "hi"), "no such file")
    assert_one_line_error(run_cli("complete", "-m", tmp_path, "hi"), "is a directory")
    not_fetched = run_cli("complete", "-m", "gemma-3-270m", "hi", env={"GGUF_RUNTIME_MODELS": str(tmp_path)})
    assert_one_line_error(not_fetched, "gguf-runtime pull gemma-3-270m")


def test_not_a_gguf_file(tmp_path):
    (tmp_path / "notes.gguf").write_text("hello, not a model\n")
    assert_one_line_error(run_cli("complete", "-m", tmp_path / "notes.gguf", "hi"), "not a GGUF file")


def test_unsupported_architecture(smollm2_path, tmp_path):
    arch_key = _gguf_string("general.architecture") + struct.pack("<I", 8)  # 8 = string
    model = _patched_copy(smollm2_path, tmp_path / "bloom.gguf", arch_key + _gguf_string("llama"),
                          arch_key + _gguf_string("bloom"))
    assert_one_line_error(run_cli("complete", "-m", model, "hi"), "unsupported architecture", "bloom")


def test_unsupported_tensor_type(smollm2_path, tmp_path):
    # IQ2_XXS blocks (256 weights, 66 bytes) are smaller than Q4_1's (160 bytes per 256): the file stays valid
    name = "blk.0.ffn_down.weight"
    with GGUFFile(smollm2_path) as g:
        tensor = g.tensors[name]
        assert tensor.type_name == "Q4_1" and tensor.shape == (576, 1536)
    info = _gguf_string(name) + struct.pack("<IQQ", 2, 1536, 576)  # n_dims, ne0, ne1
    model = _patched_copy(smollm2_path, tmp_path / "iq2.gguf", info + struct.pack("<I", 3),
                          info + struct.pack("<I", 16))
    assert_one_line_error(run_cli("complete", "-m", model, "hi"), "IQ2_XXS")


def test_prompt_longer_than_the_context(smollm2_path):
    result = run_cli("complete", "-m", smollm2_path, "--n-ctx", "16", "word " * 40)
    assert_one_line_error(result, "context")


@pytest.mark.parametrize("flags, expected", [
    (["--temperature", "-1"], "--temperature"),
    (["--top-p", "0"], "--top-p"),
    (["-n", "0"], "--max-tokens"),
    (["--n-ctx", "4"], "--n-ctx"),
    (["--stop", ""], "stop"),
    (["--presence-penalty", "3"], "--presence-penalty"),
])
def test_bad_flag_values(smollm2_path, flags, expected):
    assert_one_line_error(run_cli("complete", "-m", smollm2_path, *flags, "hi"), expected)


def test_more_threads_than_numba_allows(smollm2_path):
    assert_one_line_error(run_cli("complete", "-m", smollm2_path, "-t", "100000", "hi"), "threads")


def test_no_prompt_at_all_is_a_user_error(smollm2_path):
    assert_one_line_error(run_cli("complete", "-m", smollm2_path, stdin=""), "prompt is empty")


def test_debug_flag_shows_the_traceback(tmp_path):
    (tmp_path / "notes.gguf").write_text("hello, not a model\n")
    result = run_cli("--debug", "complete", "-m", tmp_path / "notes.gguf", "hi")
    assert result.returncode == 2
    assert "Traceback (most recent call last)" in result.stderr and "GGUFError" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("error: ")


def test_prompt_cache_is_saved_then_reused(smollm2_path, reference, tmp_path):
    cache = tmp_path / "prompt.kv"
    first = run_cli("complete", "-m", smollm2_path, *GREEDY, "--json", "--prompt-cache", cache, PROMPT)
    assert first.returncode == 0, first.stderr
    assert cache.is_file() and json.loads(first.stdout)["stats"]["reused_tokens"] == 0
    second = run_cli("complete", "-m", smollm2_path, *GREEDY, "--json", "--prompt-cache", cache, PROMPT)
    assert second.returncode == 0, second.stderr
    out = json.loads(second.stdout)
    assert out["stats"]["reused_tokens"] == len(reference.prompt_token_ids) - 1  # only the last token re-runs
    assert out["text"] == reference.outputs[0].text
    other = run_cli("complete", "-m", smollm2_path, *GREEDY, "--kv-type", "q8_0", "--prompt-cache", cache, PROMPT)
    assert other.returncode == 0 and other.stderr.startswith("warning: ignoring the prompt cache"), other.stderr


def test_kv_type_choices_are_the_cache_types():
    from gguf_runtime.cli._options import KV_CACHE_TYPES
    from gguf_runtime.kv_cache import KV_TYPES

    assert set(KV_CACHE_TYPES) == set(KV_TYPES)
