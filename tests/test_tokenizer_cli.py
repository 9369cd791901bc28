"""`gguf-runtime tokenize`: ids and pieces as JSON or a table, the --special/--no-bos flags, one-line errors."""

from __future__ import annotations

import json

from click.testing import CliRunner

from gguf_runtime.cli import main


def run(*args: str):
    return CliRunner().invoke(main, ["tokenize", *args])


def test_json_ids_and_pieces(smollm2_path):
    result = run(str(smollm2_path), "Hello world", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"ids": [19556, 905], "pieces": ["Hello", " world"], "n_tokens": 2}


def test_special_flag_parses_control_tokens(smollm2_path):
    plain = json.loads(run(str(smollm2_path), "<|im_end|>", "--json").output)
    special = json.loads(run(str(smollm2_path), "<|im_end|>", "--json", "--special").output)
    assert special["ids"] == [2] and special["pieces"] == ["<|im_end|>"]
    assert len(plain["ids"]) > 1


def test_no_bos_flag(gemma_path):
    with_bos = json.loads(run(str(gemma_path), "Hi there", "--json").output)
    without = json.loads(run(str(gemma_path), "Hi there", "--json", "--no-bos").output)
    assert with_bos["ids"] == [2] + without["ids"]


def test_table_shows_pieces_and_partial_utf8(smollm2_path):
    result = run(str(smollm2_path), "😀 ok")
    assert result.exit_code == 0, result.output
    n_tokens = json.loads(run(str(smollm2_path), "😀 ok", "--json").output)["n_tokens"]
    assert f"{n_tokens} tokens" in result.output
    assert "b'\\xf0\\x9f'" in result.output and "' ok'" in result.output


def test_missing_model_is_a_one_line_error(tmp_path):
    result = run(str(tmp_path / "nope.gguf"), "x")
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: no such file")
