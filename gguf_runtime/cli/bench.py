"""`gguf-runtime bench`: prompt-processing and generation speed, shaped like llama.cpp's llama-bench.

`ppN` evaluates N tokens as one prompt from an empty cache; `tgN` decodes N tokens one at a time after a
one-token prompt (greedy sampling, which costs microseconds beside a forward pass). Both run through the engine. Tokens are random ids, as in llama-bench. Each test
runs once untimed to warm up (compiling kernels on a cold cache), then REPS times; speed is the mean of the
per-run tokens/second, ± their standard deviation.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from ._app import main
from ._load import load_llm, status
from ._options import model_options
from .info import file_type_name

if TYPE_CHECKING:
    from ..api import LLM


@dataclass
class BenchResult:
    model: str
    model_type: str  # "llama 135M Q4_1", as llama-bench names it
    size_bytes: int  # bytes of tensor data
    n_params: int
    test: str  # "pp256" | "tg128"
    n_tokens: int
    threads: int
    reps: int
    tokens_per_second: float
    stddev: float
    samples: list[float]


@main.command()
@model_options
@click.option("--n-prompt", "-p", type=click.IntRange(min=0), default=256, show_default=True,
              help="Prompt tokens for the pp test (0 skips it).")
@click.option("--n-gen", "-n", type=click.IntRange(min=0), default=128, show_default=True,
              help="Generated tokens for the tg test (0 skips it).")
@click.option("--reps", "-r", type=click.IntRange(min=1), default=5, show_default=True,
              help="Timed repetitions of each test.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of results instead of the table.")
def bench(model: str, n_ctx: int, threads: int | None, kv_type: str, n_prompt: int, n_gen: int, reps: int,
          as_json: bool) -> None:
    """Measure prompt processing (ppN) and token generation (tgN) speed in tokens/second."""
    import numba

    llm = load_llm(model, max(n_ctx, n_prompt, n_gen), threads, kv_type)
    tests = [(f"pp{n_prompt}", n_prompt, _prompt_run), (f"tg{n_gen}", n_gen, _generation_run)]
    results = []
    for name, n_tokens, run in tests:
        if n_tokens == 0:
            continue
        with status(f"{name}: warming up ..."):
            run(llm, n_tokens)  # untimed: compiles kernels on a cold cache, faults in the weights
        samples = []
        for rep in range(reps):
            with status(f"{name}: run {rep + 1} of {reps} ..."):
                samples.append(n_tokens / run(llm, n_tokens))
        results.append(_result(llm, model, name, n_tokens, numba.get_num_threads(), samples))
    if as_json:
        click.echo(json.dumps([asdict(r) for r in results]))
    else:
        _print_table(results)


def _tokens(llm: LLM, n: int) -> list[int]:
    import numpy as np

    return np.random.default_rng(n).integers(0, llm.tokenizer.n_vocab, size=n).tolist()


def _prompt_run(llm: LLM, n_tokens: int) -> float:
    """Seconds to evaluate n_tokens as one prompt (chunked by n_batch) from an empty cache."""
    return _run(llm, _tokens(llm, n_tokens), 1).prefill_seconds


def _generation_run(llm: LLM, n_tokens: int) -> float:
    """Seconds to decode n_tokens one at a time after a one-token prompt (greedy, end-of-text ignored)."""
    return _run(llm, _tokens(llm, 1), n_tokens + 1).decode_seconds


def _run(llm: LLM, prompt: list[int], max_tokens: int):
    """One request through the engine with nothing reused from earlier runs; its stats."""
    from ..sampling import SamplingParams

    llm.reset()
    llm.engine.prefix_caching = False  # every rep evaluates the whole prompt
    try:
        params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
        return llm.generate(prompt, params)[0].outputs[0].metrics
    finally:
        llm.engine.prefix_caching = True


def _result(llm: LLM, model: str, test: str, n_tokens: int, threads: int, samples: list[float]) -> BenchResult:
    tensors = llm.gguf.tensors.values()
    n_params = sum(t.n_elements for t in tensors)
    file_type = file_type_name(llm.gguf.get("general.file_type")) or "?"
    return BenchResult(
        model=model, model_type=f"{llm.config.arch} {_count(n_params)} {file_type}",
        size_bytes=sum(t.n_bytes for t in tensors), n_params=n_params, test=test, n_tokens=n_tokens,
        threads=threads, reps=len(samples), tokens_per_second=round(statistics.fmean(samples), 2),
        stddev=round(statistics.stdev(samples), 2) if len(samples) > 1 else 0.0,
        samples=[round(s, 2) for s in samples])


def _count(n: int) -> str:
    """Parameter count as llama-bench labels models: 135M, 1.5B."""
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def _print_table(results: list[BenchResult]) -> None:
    table = Table("model", "size", "params", "test", "threads", "t/s")
    for col in (1, 2, 4, 5):
        table.columns[col].justify = "right"
    for r in results:
        table.add_row(r.model_type, f"{r.size_bytes / 2**20:.2f} MiB", f"{r.n_params / 1e6:.2f} M", r.test,
                      str(r.threads), f"{r.tokens_per_second:.2f} ± {r.stddev:.2f}")
    Console().print(table)
