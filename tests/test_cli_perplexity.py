"""`gguf-runtime perplexity` reproduces llama.cpp's figure on the fixture text."""

import json

from click.testing import CliRunner

from gguf_runtime.cli import main


def test_perplexity_command_matches_llama_cpp(smollm2_path, fixtures_dir):
    ref = json.loads((fixtures_dir / "forward" / "smollm2-135m.json").read_text())["perplexity"]
    result = CliRunner().invoke(main, ["perplexity", str(smollm2_path), str(fixtures_dir / "ppl_text.txt"),
                                       "--n-ctx", str(ref["n_ctx"]), "--chunks", str(ref["chunks"]), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["chunks"] == ref["chunks"]
    assert abs(out["ppl"] / ref["ppl"] - 1) < 0.01


def test_text_shorter_than_a_chunk_is_a_one_line_error(smollm2_path, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("Too short.")
    result = CliRunner().invoke(main, ["perplexity", str(smollm2_path), str(short), "--n-ctx", "64"])
    assert result.exit_code == 2 and "at least n_ctx" in result.output
