"""`gguf-runtime tokenize MODEL TEXT`: the token ids and pieces of a text, as a table or JSON."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..tokenizer import Tokenizer
from ._app import main
from .info import open_model


@main.command()
@click.argument("model")
@click.argument("text")
@click.option("--special", is_flag=True, help="Parse special-token text such as <|im_end|> into its id.")
@click.option("--no-bos", is_flag=True, help="Do not add the BOS/EOS tokens the model asks for.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def tokenize(model: str, text: str, special: bool, no_bos: bool, as_json: bool) -> None:
    """Tokenize TEXT with MODEL's vocabulary (a file path or catalog name), exactly as llama.cpp does."""
    with open_model(model) as gguf:
        tok = Tokenizer.from_metadata(gguf.metadata)
    ids = tok.encode(text, add_special=not no_bos, parse_special=special)
    pieces = [tok.token_bytes(i) for i in ids]
    if as_json:  # pieces that are not whole UTF-8 characters show their bytes as \\xNN escapes
        pieces = [p.decode("utf-8", "backslashreplace") for p in pieces]
        click.echo(json.dumps({"ids": ids, "pieces": pieces, "n_tokens": len(ids)}, ensure_ascii=False))
        return
    table = Table("#", "id", "piece", "vocab text", "special", title=f"{len(ids)} tokens")
    for n, (token_id, piece) in enumerate(zip(ids, pieces)):
        table.add_row(str(n), str(token_id), Text(_show(piece)), Text(repr(tok.token_text(token_id))),
                      "yes" if tok.is_special(token_id) else "")
    Console().print(table)


def _show(piece: bytes) -> str:
    """The piece as a quoted string, or as bytes when it is part of a UTF-8 character."""
    try:
        return repr(piece.decode("utf-8"))
    except UnicodeDecodeError:
        return repr(piece)
