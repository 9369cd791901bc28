"""The click group and the one place user errors become a one-line message and an exit code."""

from __future__ import annotations

import sys

import click
USAGE_ERROR = 2  # click's own code for bad usage; we use it for bad input too


class UserError(click.ClickException):
    """A mistake the user can fix: printed as one line, no traceback."""

    exit_code = USAGE_ERROR

    def show(self, file=None):
        click.echo(f"error: {self.format_message()}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gguf-runtime")
def main():
    """Run quantized GGUF language models on the CPU."""
