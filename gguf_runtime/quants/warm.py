"""Compiling a type's kernels ahead of use (numba compiles on first call and caches on disk)."""

from __future__ import annotations

import time

import numpy as np

from . import kernels
from .qmatrix import QMatrix
from .registry import get_qtype
from .rows import dequantize, embed_rows


def warm_up(ggml_type: int) -> float:
    """Compile, or load from the disk cache, every kernel a model with tensors of this type runs
    (matvec, integer and tiled matmul, dequantize, embedding lookup); returns the seconds it took. The matmul
    runs enough tokens to take every type's integer GEMM (matvec compiles the row kernels)."""
    start = time.perf_counter()
    qtype = get_qtype(ggml_type)
    raw = np.zeros((2, qtype.row_bytes(max(qtype.block_size, 32))), np.uint8)  # zero bytes decode to zeros
    m = QMatrix(raw, ggml_type, "warm-up")
    x = np.zeros((max(kernels.GEMM_MIN_TOKENS.values()), m.n_cols), np.float32)
    m.matvec(x[0])
    m.matmul_integer(x)
    m.matmul_tiled(x)
    dequantize(raw, ggml_type)
    embed_rows(raw, ggml_type, [1, 0])
    return time.perf_counter() - start
