"""`gguf-runtime warmup [MODEL]`: compile the quantized kernels before the first run needs them."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import click

from ._app import UserError, main
from ._load import status
from .info import open_model


@main.command()
@click.argument("model", required=False)
def warmup(model: str | None) -> None:
    """Compile the kernels MODEL runs (a path or catalog name), or those of every supported type. Compiled
    code is cached on disk (NUMBA_CACHE_DIR, default ~/.cache/gguf-runtime/numba), so later runs start in
    about a second."""
    if model is not None:
        return _warm_model(model)
    wanted = None
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


# The short generation of _warm_model, in a process of its own: numba compiles on one core, so the fused
# kernels (that process) and the layer-by-layer prefill kernels (this one) compile side by side.
_FUSED_RUN = ("import sys; from gguf_runtime import LLM, SamplingParams; "
              "LLM(sys.argv[1], n_ctx=128).generate([[1, 2, 3]], SamplingParams(temperature=0, max_tokens=2))")


def _warm_model(model: str) -> None:
    """Run what a first session runs, so it compiles exactly that: a prompt long enough for the
    layer-by-layer prefill, and a short one whose prefill and decode take the fused path (fused.py), the two
    compiling in parallel processes into the one disk cache. Then both run here, from the cache."""
    with open_model(model):  # a clear error for a missing or unreadable file, before numba loads
        pass
    with status("loading numba ..."):
        from .. import runtime
        from ..api import LLM
        from ..catalog import resolve_model
        from ..sampling import SamplingParams

        runtime.setup()  # NUMBA_CACHE_DIR is in the environment the other process inherits
    start = time.perf_counter()
    with status(f"compiling the kernels {model} runs ..."):
        fused = subprocess.Popen([sys.executable, "-c", _FUSED_RUN, str(resolve_model(model))],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        llm = LLM(model, n_ctx=128)
        llm.logits(list(range(1, 41)))  # layer by layer (a 40-token prefill)
        fused.wait()  # if it failed, the next line compiles what it did not
        llm.generate([[1, 2, 3]], SamplingParams(temperature=0, max_tokens=2))  # fused prefill and decode
    click.echo(f"kernels ready for {model} in {time.perf_counter() - start:.1f} s "
               f"(cache: {os.environ.get('NUMBA_CACHE_DIR')})")
