"""`gguf-runtime warmup [MODEL]`: compile the quantized kernels before the first run needs them."""

from __future__ import annotations

import os
import time

import click

from ._app import UserError, main
from ._load import status
from .info import open_model


@main.command()
@click.argument("model", required=False)
def warmup(model: str | None) -> None:
    """Compile the kernels for the tensor types MODEL uses (a path or catalog name), or for every supported
    type. Compiled code is cached on disk (NUMBA_CACHE_DIR, default ~/.cache/gguf-runtime/numba), so later
    runs start in about a second."""
    if model is None:
        wanted = None
    else:
        with open_model(model) as g:
            wanted = sorted({t.ggml_type for t in g.tensors.values()})
    with status("loading numba ..."):
        from .. import runtime
        from ..quants import QTYPES, UnsupportedQuantError, get_qtype, warm_up

        runtime.setup()
        from ..quants.registry import type_name

    if wanted is None:
        wanted = sorted(QTYPES)
    names = {t: type_name(t) for t in wanted}
    try:
        for t in wanted:
            get_qtype(t, f"{model} tensors")
    except UnsupportedQuantError as e:
        raise UserError(str(e)) from None
    start = time.perf_counter()
    for t in wanted:
        with status(f"compiling {names[t]} kernels ..."):
            seconds = warm_up(t)
        click.echo(f"{names[t]:>7}  {seconds:6.1f} s")
    click.echo(f"kernels ready for {', '.join(names[t] for t in wanted)} in {time.perf_counter() - start:.1f} s "
               f"(cache: {os.environ.get('NUMBA_CACHE_DIR')})")
