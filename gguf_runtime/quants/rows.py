"""Whole-array entry points on raw tensor rows: dequantize, quantize, embedding lookup."""

from __future__ import annotations

import numpy as np

from . import kernels
from .registry import QuantType, get_qtype


def as_rows(data: np.ndarray, qtype: QuantType, name: str = "") -> np.ndarray:
    """A tensor as the reader gives it (uint8 rows, or float32/float16/uint16 for F32/F16/BF16) -> a read-only
    2-D uint8 view (rows, row_bytes), without copying. Every kernel sees this one array type, so numba
    compiles each of them once."""
    where = f"tensor {name!r}: " if name else ""
    data = np.asarray(data)
    if data.ndim < 1 or not data.flags.c_contiguous:
        raise ValueError(f"{where}expected a C-contiguous array of rows, got shape {data.shape}")
    if data.dtype != np.uint8:
        if qtype.block_size != 1 or data.dtype.itemsize != qtype.type_size:
            raise ValueError(f"{where}{qtype.name} data must be uint8 rows, got {data.dtype}")
        data = data.view(np.uint8)
    raw = data.reshape(-1, data.shape[-1]) if data.ndim != 2 else data.view()
    qtype.n_cols(raw.shape[1])  # validates the row size
    raw.flags.writeable = False
    return raw


def dequantize(raw: np.ndarray, ggml_type: int) -> np.ndarray:
    """Raw rows (..., row_bytes) -> float32 (..., n_cols), bit-exact with gguf.quants.dequantize."""
    qtype = get_qtype(ggml_type)
    rows = as_rows(raw, qtype)
    n_cols = qtype.n_cols(rows.shape[1])
    out = np.empty((rows.shape[0], n_cols), np.float32)
    kernels.dequantize_rows(qtype.ggml_type, rows, np.arange(rows.shape[0], dtype=np.int64), out)
    return out.reshape(*np.shape(raw)[:-1], n_cols)


def quantize(x: np.ndarray, ggml_type: int) -> np.ndarray:
    """float32 (..., K) -> raw rows uint8 (..., row_bytes) in the type's GGUF layout (llama.cpp's reference
    quantizers, no importance matrix; bit-exact with gguf-py for the legacy types)."""
    qtype = get_qtype(ggml_type)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim < 1:
        raise ValueError("quantize: expected an array of rows")
    rows = x.reshape(-1, x.shape[-1])
    out = np.zeros((rows.shape[0], qtype.row_bytes(rows.shape[1])), np.uint8)
    qtype.quantize_rows(rows, out)
    return out.reshape(*x.shape[:-1], out.shape[1])


def embed_rows(data: np.ndarray, ggml_type: int, ids, out: np.ndarray | None = None) -> np.ndarray:
    """out[i] = dequantized row ids[i] of a (possibly quantized) table; out float32 (len(ids), n_cols)."""
    qtype = get_qtype(ggml_type, "embedding table")
    rows = as_rows(data, qtype, "embedding table")
    n_cols = qtype.n_cols(rows.shape[1])
    ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= rows.shape[0]):
        bad = ids[(ids < 0) | (ids >= rows.shape[0])][0]
        raise IndexError(f"embed_rows: id {bad} out of range for a table of {rows.shape[0]} rows")
    if out is None:
        out = np.empty((ids.size, n_cols), np.float32)
    elif out.shape != (ids.size, n_cols) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"embed_rows: out must be C-contiguous float32 {(ids.size, n_cols)}, got "
                         f"{out.dtype} {out.shape}")
    kernels.dequantize_rows(qtype.ggml_type, rows, ids, out)
    return out
