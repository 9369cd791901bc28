"""The click group and the one place user errors become a one-line message and an exit code."""

from __future__ import annotations

import os
import sys
import traceback
from importlib import import_module

import click

from ._errors import user_error_for

USAGE_ERROR = 2  # click's own code for bad usage; we use it for bad input too
INTERNAL_ERROR = 1
_DEBUG_KEY = "gguf_runtime.debug"


class UserError(click.ClickException):
    """A mistake the user can fix: printed as one line, no traceback."""

    exit_code = USAGE_ERROR

    def show(self, file=None):
        click.echo(f"error: {self.format_message()}", err=True)


class _InternalError(UserError):
    """An exception nobody expected (a bug): one line plus how to see the traceback."""

    exit_code = INTERNAL_ERROR


class _Group(click.Group):
    """Turns exceptions escaping a subcommand into one line on stderr (the traceback too under --debug).

    Subcommands are imported when named (`lazy`: command name -> module in this package, which registers it
    with `@main.command()`), so `complete` does not pay for the imports of `pull`, `info` or `chat`.
    """

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            import_module(f".{self.lazy[cmd_name]}", __package__)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as e:  # a bad flag value: one line, with where to read more
            command = f"{e.ctx.command_path} --help" if e.ctx else "--help"
            raise UserError(f"{e.format_message()} (see `{command}`)") from None
        except click.ClickException as e:
            if e.__cause__ is not None and _debug(ctx):  # a UserError raised `from` the exception behind it
                traceback.print_exception(e.__cause__, file=sys.stderr)
            raise
        except (click.exceptions.Exit, click.Abort, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - every failure ends as one line, the traceback on demand
            debug = _debug(ctx)
            if debug:
                traceback.print_exc(file=sys.stderr)
            message = user_error_for(exc)
            if message is not None:
                raise UserError(message) from None
            hint = "" if debug else " (run `gguf-runtime --debug ...` for the traceback)"
            raise _InternalError(f"internal error: {type(exc).__name__}: {exc}{hint}") from None


def _debug(ctx: click.Context) -> bool:
    return bool(ctx.meta.get(_DEBUG_KEY)) or os.environ.get("GGUF_RUNTIME_DEBUG") not in (None, "", "0")


# Command name -> the module defining it.
_COMMANDS = {"pull": "pull", "models": "pull", "info": "info", "complete": "complete", "chat": "chat",
             "bench": "bench", "perplexity": "perplexity", "tokenize": "tokenize", "warmup": "warmup",
             "serve": "serve"}


@click.group(cls=_Group, lazy=_COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gguf-runtime")
@click.option("--debug", is_flag=True, help="Show the full traceback when a command fails.")
@click.pass_context
def main(ctx: click.Context, debug: bool):
    """Run quantized GGUF language models on the CPU."""
    ctx.meta[_DEBUG_KEY] = debug
