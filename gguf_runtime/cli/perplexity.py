"""`gguf-runtime perplexity MODEL FILE`: llama-perplexity's measurement on a text file."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ._app import UserError, main
from ._load import load_llm
from ._options import KV_CACHE_TYPES


@main.command()
@click.argument("model")
@click.argument("text_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--n-ctx", type=click.IntRange(min=16), default=512, show_default=True,
              help="Chunk length; the second half of each chunk is scored.")
@click.option("--chunks", type=click.IntRange(min=1), default=None, help="Score at most this many chunks.")
@click.option("--threads", "-t", type=click.IntRange(min=1), default=None)
@click.option("--kv-type", type=click.Choice(KV_CACHE_TYPES), default="f32", show_default=True,
              help="KV cache type (its accuracy cost is what this measures).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a line of text.")
def perplexity(model: str, text_file: Path, n_ctx: int, chunks: int | None, threads: int | None,
               kv_type: str, as_json: bool) -> None:
    """Perplexity of MODEL on TEXT_FILE, measured as llama.cpp's llama-perplexity does."""
    from ..perplexity import perplexity as measure

    llm = load_llm(model, n_ctx, threads, kv_type)
    tokens = llm.tokenize(text_file.read_text(encoding="utf-8", errors="replace"), add_special=True)
    bos = llm.tokenizer.bos_id if llm.tokenizer.add_bos else None
    try:
        result = measure(tokens, n_ctx, llm.logits, bos, chunks)
    except ValueError as e:
        raise UserError(str(e)) from None
    if as_json:
        click.echo(json.dumps({"ppl": result.ppl, "chunks": result.chunks, "scored_tokens": result.scored_tokens,
                               "n_ctx": n_ctx}))
    else:
        click.echo(f"perplexity {result.ppl:.4f} over {result.chunks} chunks of {n_ctx} "
                   f"({result.scored_tokens} scored tokens)")
