"""The `gguf-runtime` command. Each subcommand lives in its own module, imported when the command is run
(the table is `_app._COMMANDS`), and registers on `main`."""

from __future__ import annotations

from ._app import main  # noqa: F401
