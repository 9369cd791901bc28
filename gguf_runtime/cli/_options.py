"""Flags shared by the generating commands: model selection and every sampling parameter.

One table drives both the click options and the chat REPL's `/set`, so a parameter's name, range and help
are written once. Defaults are llama.cpp's (`SamplingParams.llama_cpp_defaults()`), not vLLM's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import click

from ..catalog import DEFAULT_MODEL
from ..errors import StructuredOutputError
from ..sampling import SamplingParams
from ..structured.params import StructuredOutputsParams
from ._app import UserError

LLAMA_CPP = SamplingParams.llama_cpp_defaults()
DEFAULT_N_CTX = 2048
# kv.KV_TYPES' names, spelled out so `--help` does not import numba (a test keeps them equal)
KV_CACHE_TYPES = ("f32", "f16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl")


@dataclass(frozen=True)
class SamplingFlag:
    name: str  # `/set` name; the flag is --name with dashes
    field: str  # SamplingParams field
    type: click.ParamType
    help: str
    short: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def parse(self, text: str) -> Any:
        """Convert and range-check a value typed at the REPL (click.BadParameter if it does not fit)."""
        return self.type.convert(text, None, None)


SAMPLING_FLAGS: tuple[SamplingFlag, ...] = (
    SamplingFlag("temperature", "temperature", click.FloatRange(min=0), "Sampling temperature; 0 = greedy."),
    SamplingFlag("top_k", "top_k", click.IntRange(min=-1), "Keep the K most likely tokens; 0 or -1 = off."),
    SamplingFlag("top_p", "top_p", click.FloatRange(0, 1, min_open=True), "Nucleus sampling mass; 1 = off."),
    SamplingFlag("min_p", "min_p", click.FloatRange(0, 1), "Drop tokens below MIN_P x the top probability."),
    SamplingFlag("typical_p", "typical_p", click.FloatRange(0, 1, min_open=True),
                 "Locally typical sampling mass; 1 = off."),
    SamplingFlag("repeat_penalty", "repetition_penalty", click.FloatRange(min=0, min_open=True),
                 "Penalise repeated tokens; 1 = off."),
    SamplingFlag("repeat_last_n", "penalty_last_n", click.IntRange(min=-1),
                 "Tokens the penalties look back over; 0 = off, -1 = all."),
    SamplingFlag("presence_penalty", "presence_penalty", click.FloatRange(-2, 2), "Penalty for any repeat."),
    SamplingFlag("frequency_penalty", "frequency_penalty", click.FloatRange(-2, 2),
                 "Penalty per earlier occurrence."),
    SamplingFlag("seed", "seed", click.IntRange(min=0), "Random seed (default: a fresh one each run)."),
)
MAX_TOKENS = SamplingFlag("max_tokens", "max_tokens", click.IntRange(min=1), "Most tokens to generate.", "-n")
SETTABLE = {f.name: f for f in (*SAMPLING_FLAGS, MAX_TOKENS)}


def model_options(func: Callable) -> Callable:
    """--model/-m, --n-ctx, --threads/-t and --kv-type."""
    func = click.option("--kv-type", type=click.Choice(KV_CACHE_TYPES), default="f32", show_default=True,
                        help="KV cache type (llama.cpp's --cache-type-k/v): q8_0 halves its memory.")(func)
    func = click.option("--threads", "-t", type=click.IntRange(min=1), default=None,
                        help="CPU threads for the kernels (default: all cores).")(func)
    func = click.option("--n-ctx", type=click.IntRange(min=8), default=DEFAULT_N_CTX, show_default=True,
                        help="Context length in tokens.")(func)
    func = click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True,
                        help="A catalog name (see `gguf-runtime models`) or a GGUF file path.")(func)
    return func


def speculative_options(func: Callable) -> Callable:
    """--draft MODEL, --spec ngram, --draft-max, --draft-min, --draft-p-min, --draft-always (output is unchanged
    by them)."""
    func = click.option("--draft-always", is_flag=True, default=False,
                        help="Draft on every step, even while drafting is measured slower than plain decoding "
                             "(by default it pauses then).")(func)
    func = click.option("--draft-p-min", type=click.FloatRange(0, 1), default=0.75, show_default=True,
                        help="Stop drafting when the draft model's top probability falls below this.")(func)
    func = click.option("--draft-min", type=click.IntRange(min=1), default=1, show_default=True,
                        help="Smallest number of tokens drafted per step.")(func)
    func = click.option("--draft-max", type=click.IntRange(1, 16), default=16, show_default=True,
                        help="Largest number of tokens drafted per step (the draft length adapts up to it).")(func)
    func = click.option("--spec", type=click.Choice(["draft", "ngram"]), default=None,
                        help="Speculative decoding: 'draft' (needs --draft) or 'ngram' (prompt lookup, no "
                             "second model).")(func)
    func = click.option("--draft", "draft_model", default=None, metavar="MODEL",
                        help="A smaller model with the same vocabulary that drafts tokens for speculative "
                             "decoding (catalog name or path).")(func)
    return func


def pop_speculative(kwargs: dict) -> dict:
    """The speculative flags, as LLM() keyword arguments."""
    spec = {k: kwargs.pop(k) for k in ("draft_model", "spec", "draft_max", "draft_min", "draft_p_min")}
    spec["speculative"] = spec.pop("spec")
    spec["adaptive_drafting"] = not kwargs.pop("draft_always")
    if spec["draft_min"] > spec["draft_max"]:
        raise click.BadParameter(f"--draft-min {spec['draft_min']} is larger than --draft-max {spec['draft_max']}")
    return spec


def sampling_options(max_tokens: int) -> Callable[[Callable], Callable]:
    """Every sampling flag, defaulting to llama.cpp's values, and --max-tokens/-n defaulting to `max_tokens`."""

    def decorate(func: Callable) -> Callable:
        func = click.option("--ignore-eos", is_flag=True, help="Keep generating past end-of-generation tokens.")(func)
        func = click.option("--stop", multiple=True, metavar="TEXT",
                            help="Stop before this text (repeatable); it is not printed.")(func)
        for flag in reversed((*SAMPLING_FLAGS, MAX_TOKENS)):
            default = max_tokens if flag is MAX_TOKENS else getattr(LLAMA_CPP, flag.field)
            names = [flag.flag, flag.short] if flag.short else [flag.flag]
            func = click.option(*names, flag.name, type=flag.type, default=default,
                                show_default=default is not None, help=flag.help)(func)
        return func

    return decorate


def pop_sampling_params(kwargs: dict[str, Any]) -> SamplingParams:
    """Remove the sampling flags from a command's kwargs and build SamplingParams from them."""
    values = {flag.field: kwargs.pop(flag.name) for flag in SETTABLE.values()}
    stop = list(kwargs.pop("stop"))
    return build_params(LLAMA_CPP, stop=stop, ignore_eos=kwargs.pop("ignore_eos"), **values)


def build_params(base: SamplingParams, **changes: Any) -> SamplingParams:
    """`base` with `changes`; SamplingParams' own validation failures become a one-line UserError."""
    try:
        return dataclasses.replace(base, **changes)
    except (ValueError, TypeError) as e:
        raise UserError(str(e)) from None


def structured_options(func: Callable) -> Callable:
    """--json-schema, --grammar-file, --regex and --choice: constrain the output (one of them)."""
    func = click.option("--choice", multiple=True, metavar="TEXT",
                        help="Answer with exactly one of these texts (repeat: --choice yes --choice no).")(func)
    func = click.option("--regex", default=None, metavar="RE",
                        help="Output matches this regular expression (whole output; Rust regex syntax).")(func)
    func = click.option("--grammar-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                        default=None, metavar="FILE",
                        help="Output follows this grammar (llama.cpp GBNF, or llguidance Lark).")(func)
    func = click.option("--json-schema", default=None, metavar="FILE_OR_JSON",
                        help="Output is JSON matching this schema (a file, or the schema itself).")(func)
    return func


def pop_structured_outputs(kwargs: dict[str, Any]) -> StructuredOutputsParams | None:
    """The structured-output flags as StructuredOutputsParams (None when none is given); a bad flag value is
    a one-line UserError (the schema's own validity is checked when the request starts)."""
    schema, grammar_file = kwargs.pop("json_schema"), kwargs.pop("grammar_file")
    regex, choice = kwargs.pop("regex"), list(kwargs.pop("choice"))
    given = [flag for flag, value in (("--json-schema", schema), ("--grammar-file", grammar_file),
                                      ("--regex", regex), ("--choice", choice)) if value]
    if len(given) > 1:
        raise UserError(f"give one of --json-schema, --grammar-file, --regex, --choice (got {' and '.join(given)})")
    if not given:
        return None
    try:
        if schema is not None:
            return StructuredOutputsParams(json=_schema_argument(schema))
        if grammar_file is not None:
            return StructuredOutputsParams(grammar=_read_text(grammar_file, "--grammar-file"))
        return StructuredOutputsParams(regex=regex) if regex is not None else StructuredOutputsParams(choice=choice)
    except StructuredOutputError as e:
        raise UserError(str(e)) from None


def _schema_argument(value: str) -> str:
    """A schema given inline (it starts with "{") or as a file path."""
    if value.lstrip().startswith("{"):
        return value
    path = Path(value)
    if not path.is_file():
        raise UserError(f"--json-schema: {value!r} is neither a JSON schema nor a file")
    return _read_text(path, "--json-schema")


def _read_text(path: Path, flag: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{flag}: cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
