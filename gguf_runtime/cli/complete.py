"""`gguf-runtime complete`: one prompt in, the generated text streamed to stdout."""

from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path

import click

from ._app import UserError, main
from ._load import COMMAND_START, first_wait_message, load_llm
from ._options import (build_params, model_options, pop_sampling_params, pop_speculative, pop_structured_outputs,
                       sampling_options, speculative_options, structured_options)
from ._stream import stats_fields, stats_line, stream_to

MAX_TOKENS = 128
INTERRUPTED = 130  # the shell's code for "ended by SIGINT"


@main.command()
@click.argument("prompt", required=False)
@model_options
@sampling_options(max_tokens=MAX_TOKENS)
@speculative_options
@structured_options
@click.option("--chat", "as_chat", is_flag=True,
              help="Wrap PROMPT in the model's chat template as one user message.")
@click.option("--system", default=None, help="System message (implies --chat).")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object (text, token_ids, finish_reason, stop_reason, stats) at the end.")
@click.option("--verbose", "-v", is_flag=True, help="Load time and prompt/decode speed on stderr.")
@click.option("--prompt-cache", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="FILE",
              help="Load the KV cache from FILE if it exists (a prompt starting with its tokens evaluates only "
                   "the rest) and save it there afterwards, like llama.cpp's --prompt-cache.")
def complete(prompt: str | None, model: str, n_ctx: int, threads: int | None, kv_type: str, as_chat: bool,
             system: str | None, as_json: bool, verbose: bool, prompt_cache: Path | None, **sampling) -> None:
    """Continue PROMPT (or text piped on stdin; `-` reads stdin too) and stream the continuation to stdout.

    Sampling defaults are llama.cpp's (temperature 0.8, top-k 40, top-p 0.95, min-p 0.05, repeat-last-n 64);
    at most 128 new tokens unless -n says otherwise. Only generated text goes to stdout.
    """
    params = build_params(pop_sampling_params(sampling), structured_outputs=pop_structured_outputs(sampling))
    prompt = read_prompt(prompt)
    llm = load_llm(model, n_ctx, threads, kv_type, **pop_speculative(sampling))
    if prompt_cache is not None and prompt_cache.exists():
        restore_state(llm, prompt_cache)

    if as_chat or system is not None:
        messages = ([{"role": "system", "content": system}] if system is not None else []) + \
                   [{"role": "user", "content": prompt}]
        prompt = llm.render_chat(messages)
    waiting = first_wait_message()
    gen = llm.generate_stream(prompt, params)  # tokenized and length-checked exactly as LLM.generate does

    out = io.StringIO() if as_json else sys.stdout
    try:
        streamed = stream_to(out, gen, waiting)
        if streamed.text and not streamed.text.endswith("\n") and out.isatty():
            out.write("\n")  # keep the shell prompt off the last line; pipes get the exact text
        out.flush()
    except BrokenPipeError:  # `| head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(1) from None
    if prompt_cache is not None:
        llm.save_state(prompt_cache)
    if streamed.interrupted:
        raise SystemExit(INTERRUPTED)

    generation = streamed.generation
    first_token = (streamed.first_text_at or time.perf_counter()) - COMMAND_START
    if as_json:
        click.echo(json.dumps({
            "text": generation.text, "token_ids": generation.token_ids,
            "finish_reason": generation.finish_reason, "stop_reason": generation.stop_reason,
            "stats": {**stats_fields(generation), "load_seconds": round(llm.load_seconds, 4),
                      "first_text_seconds": round(first_token, 4)},
        }, ensure_ascii=False))
    if verbose:
        click.echo(f"load: {llm.load_seconds:.2f} s | first text {first_token:.2f} s after start | "
                   f"{stats_line(generation)} | finish: {generation.finish_reason}", err=True)


def restore_state(llm, path: Path) -> None:
    """Load a saved KV cache; one that does not fit this model is reported and ignored (then overwritten)."""
    from ..state import StateFileError

    try:
        llm.load_state(path)
    except StateFileError as e:
        click.echo(f"warning: ignoring the prompt cache: {e}", err=True)


def read_prompt(argument: str | None) -> str:
    """The prompt argument, or stdin when piped (one trailing newline, as `echo` adds, is dropped)."""
    if argument is not None and argument != "-":
        text = argument
    elif sys.stdin.isatty() and argument is None:
        raise UserError("give a PROMPT argument or pipe text on stdin (see `gguf-runtime complete --help`)")
    else:
        text = sys.stdin.read()
        text = text[:-1] if text.endswith("\n") else text
    if not text:
        raise UserError("the prompt is empty")
    return text
