"""`gguf-runtime info`: summary facts of the real models, JSON shape, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from gguf_runtime.cli import main
from gguf_runtime.gguf_file import GGUFFile

CLI = Path(sys.executable).parent / "gguf-runtime"

EXPECTED = {  # fixture -> what each file states; parameters = elements of all tensors, as llama.cpp counts
    "smollm2_path": dict(architecture="llama", file_type="Q4_1", context_length=8192, embedding_length=576,
                         block_count=30, head_count=9, head_count_kv=3, vocab_size=49152, tokenizer_model="gpt2",
                         tokenizer_pre="smollm", parameters=134_515_008,
                         special={"bos": (1, "<|im_start|>"), "eos": (2, "<|im_end|>")}),
    "qwen05_path": dict(architecture="qwen2", file_type="Q4_K_M", context_length=32768, embedding_length=896,
                        block_count=24, head_count=14, head_count_kv=2, vocab_size=151936, tokenizer_model="gpt2",
                        tokenizer_pre="qwen2", parameters=630_167_424,
                        special={"eos": (151645, "<|im_end|>"), "pad": (151643, "<|endoftext|>")}),
    "qwen15_path": dict(architecture="qwen2", file_type="Q4_K_M", context_length=32768, embedding_length=1536,
                        block_count=28, head_count=12, head_count_kv=2, vocab_size=151936, tokenizer_model="gpt2",
                        tokenizer_pre="qwen2", parameters=1_777_088_000,
                        special={"eos": (151645, "<|im_end|>")}),
    "gemma_path": dict(architecture="gemma3", file_type="Q4_K_M", context_length=32768, embedding_length=640,
                       block_count=18, head_count=4, head_count_kv=1, vocab_size=262144, tokenizer_model="llama",
                       tokenizer_pre="default", parameters=268_098_176,
                       special={"bos": (2, "<bos>"), "eos": (1, "<eos>"), "unk": (3, "<unk>")}),
}


def run_info(*args: str):
    return CliRunner().invoke(main, ["info", *args])


@pytest.mark.parametrize("fixture", list(EXPECTED))
def test_json_summary_of_real_models(fixture, request):
    path = request.getfixturevalue(fixture)
    result = run_info(str(path), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    expected = dict(EXPECTED[fixture])
    for name, (token_id, text) in expected.pop("special").items():
        assert summary["special_tokens"][name] == {"id": token_id, "text": text}
    assert {k: summary[k] for k in expected} == expected
    with GGUFFile(path) as g:
        counts = Counter(t.type_name for t in g.tensors.values())
        template = g.get("tokenizer.chat_template")
        assert summary["file_size"] == path.stat().st_size
        assert summary["tensor_count"] == len(g.tensors) and summary["metadata_keys"] == len(g.metadata)
    assert {t: m["tensors"] for t, m in summary["quant_mix"].items()} == counts
    assert sum(m["bytes"] for m in summary["quant_mix"].values()) <= summary["file_size"]
    assert summary["chat_template"] == {"present": template is not None, "length": len(template or "")}
    assert "tensors" not in summary and "metadata" not in summary


def test_text_summary(smollm2_path):
    result = run_info(str(smollm2_path))
    assert result.exit_code == 0, result.output
    for fact in ("llama", "Q4_1", "49152", "9 / 3", "'<|im_start|>'", "quant mix", "Q8_0"):
        assert fact in result.stdout, fact
    assert "blk.0.ffn_up.weight" not in result.stdout


def test_catalog_name_resolves(smollm2_path):
    result = run_info("smollm2-135m", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["path"] == str(smollm2_path)


def test_tensor_and_metadata_listings(smollm2_path):
    text = run_info(str(smollm2_path), "--tensors", "--metadata")
    assert text.exit_code == 0, text.output
    assert "blk.0.ffn_up.weight" in text.stdout and "1536 x 576" in text.stdout
    assert "array[string]" in text.stdout and "49,152 items" in text.stdout
    result = run_info(str(smollm2_path), "--tensors", "--metadata", "--json")
    summary = json.loads(result.stdout)
    with GGUFFile(smollm2_path) as g:
        assert [t["name"] for t in summary["tensors"]] == list(g.tensors)
        embd = g.tensors["token_embd.weight"]
    assert summary["tensors"][0] == {"name": "token_embd.weight", "type": "Q8_0", "shape": [49152, 576],
                                     "offset": embd.offset, "n_bytes": embd.n_bytes}
    assert summary["metadata"]["tokenizer.ggml.merges"] == {"type": "array[string]", "length": 48900}
    assert summary["metadata"]["llama.block_count"] == {"type": "uint32", "value": 30}


def _assert_one_line_error(result, pattern: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and pattern in lines[0], result.stderr


def test_bad_inputs_are_one_line_errors(tmp_path, smollm2_path, monkeypatch):
    _assert_one_line_error(run_info(str(tmp_path / "missing.gguf")), "no such file")
    _assert_one_line_error(run_info(str(tmp_path)), "is a directory")
    (tmp_path / "empty.gguf").write_bytes(b"")
    _assert_one_line_error(run_info(str(tmp_path / "empty.gguf")), "empty file")
    (tmp_path / "text.gguf").write_text("hello, not a model\n")
    _assert_one_line_error(run_info(str(tmp_path / "text.gguf")), "not a GGUF file")
    (tmp_path / "cut.gguf").write_bytes(smollm2_path.read_bytes()[:1_000_000])
    _assert_one_line_error(run_info(str(tmp_path / "cut.gguf")), "tokenizer.ggml.merges")
    monkeypatch.setenv("GGUF_RUNTIME_MODELS", str(tmp_path / "nowhere"))
    _assert_one_line_error(run_info("gemma-3-270m"), "gguf-runtime pull gemma-3-270m")


def test_real_subprocess(smollm2_path, tmp_path):
    ok = subprocess.run([CLI, "info", smollm2_path, "--json"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["architecture"] == "llama"
    bad = subprocess.run([CLI, "info", tmp_path / "missing.gguf"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("error: no such file") and len(bad.stderr.splitlines()) == 1


def test_architecture_fields_and_whether_it_runs(gemma_path, tmp_path):
    summary = json.loads(run_info(str(gemma_path), "--json").output)
    assert summary["runs"] is True
    fields = summary["architecture_fields"]
    assert fields["attention.sliding_window"] == 512 and fields["attention.key_length"] == 256
    assert "block_count" not in fields  # the common hyperparameters have their own entries
    assert "sliding_window" in run_info(str(gemma_path)).output


def test_models_says_which_architectures_run():
    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 0
    assert "runs" in result.output and "gemma3" in result.output and "qwen3moe" in result.output
