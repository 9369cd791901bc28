"""Quantized tensor kernels: dequantize, matvec/matmul on raw GGUF blocks, quantizers.

    QTYPES, get_qtype, UnsupportedQuantError   the supported ggml types (registry.py)
    dequantize, quantize, embed_rows           whole-array conversions (rows.py)
    QMatrix                                    W @ x on raw blocks (qmatrix.py)
    set_threads                                kernel threads (threads.py)
    warm_up                                    compile a type's kernels ahead of use (warm.py)

Importing this package changes one thing, because numba forces it: NUMBA_CACHE_DIR gets its default (the user
cache folder; cachedir.point_numba_cache), since numba fixes where a cached kernel lives when the kernel is
decorated, that is when the modules below are imported. Everything else process-wide (threading layer, BLAS
threads, stale-cache clean-up, the cached-code loader) is gguf_runtime.runtime.setup(), which LLM() and the
CLI call.
"""

from __future__ import annotations

from . import cachedir

cachedir.point_numba_cache()  # before the kernel modules below are decorated

from .qmatrix import QMatrix  # noqa: E402
from .registry import QTYPES, QuantType, UnsupportedQuantError, get_qtype  # noqa: E402
from .rows import dequantize, embed_rows, quantize  # noqa: E402
from .threads import set_threads  # noqa: E402
from .warm import warm_up  # noqa: E402

__all__ = ["QTYPES", "QuantType", "UnsupportedQuantError", "get_qtype", "dequantize", "quantize", "QMatrix",
           "embed_rows", "set_threads", "warm_up"]
