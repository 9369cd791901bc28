"""Quantized tensor kernels: dequantize, matvec/matmul on raw GGUF blocks, quantizers.

    QTYPES, get_qtype, UnsupportedQuantError   the supported ggml types (registry.py)
    dequantize, quantize, embed_rows           whole-array conversions (rows.py)
    QMatrix                                    W @ x on raw blocks (qmatrix.py)
    set_threads                                kernel threads (threads.py)
    warm_up                                    compile a type's kernels ahead of use (warm.py)
"""

from __future__ import annotations

from . import cachedir, threads

cachedir.configure()  # before numba is imported by the modules below
threads.configure()  # before the first parallel kernel runs

from .qmatrix import QMatrix  # noqa: E402
from .registry import QTYPES, QuantType, UnsupportedQuantError, get_qtype  # noqa: E402
from .rows import dequantize, embed_rows, quantize  # noqa: E402
from .threads import set_threads  # noqa: E402
from .warm import warm_up  # noqa: E402

cachedir.load_cached_without_refresh()

__all__ = ["QTYPES", "QuantType", "UnsupportedQuantError", "get_qtype", "dequantize", "quantize", "QMatrix",
           "embed_rows", "set_threads", "warm_up"]
