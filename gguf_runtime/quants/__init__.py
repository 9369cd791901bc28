"""Quantized tensor kernels: dequantize, matvec/matmul on raw GGUF blocks, quantizers.

    QTYPES, get_qtype, UnsupportedQuantError   the supported ggml types (registry.py)
    dequantize, quantize, embed_rows           whole-array conversions (rows.py)
    QMatrix                                    W @ x on raw blocks (qmatrix.py)
    set_threads                                kernel threads (threads.py)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# numba reads its cache location when it is imported; an installed package cannot write next to its own
# sources, so default to a per-user cache (an explicit NUMBA_CACHE_DIR wins).
if "NUMBA_CACHE_DIR" not in os.environ:
    os.environ["NUMBA_CACHE_DIR"] = str(Path.home() / ".cache" / "gguf-runtime" / "numba")
    if "numba" in sys.modules:  # imported earlier by someone else: point its live config there too
        sys.modules["numba"].config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]

from .qmatrix import QMatrix  # noqa: E402
from .registry import QTYPES, QuantType, UnsupportedQuantError, get_qtype  # noqa: E402
from .rows import dequantize, embed_rows, quantize  # noqa: E402
from .threads import set_threads  # noqa: E402

__all__ = ["QTYPES", "QuantType", "UnsupportedQuantError", "get_qtype", "dequantize", "quantize", "QMatrix",
           "embed_rows", "set_threads"]
