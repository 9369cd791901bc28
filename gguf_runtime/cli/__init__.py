"""The `gguf-runtime` command. Each subcommand lives in its own module and registers on `main`."""

from __future__ import annotations

from ._app import main  # noqa: F401
from . import pull  # noqa: F401  (registers subcommands)
from . import info  # noqa: F401
from . import complete, chat, bench  # noqa: F401
from . import perplexity  # noqa: F401
from . import tokenize  # noqa: F401
from . import warmup  # noqa: F401
