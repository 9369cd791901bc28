"""F32, F16 and BF16 weights. Rows arrive as raw bytes (4 or 2 per value); dot products run in float32 lanes
against the float32 activation (no activation quantization). Quantizers are numpy (round to nearest even)."""

from __future__ import annotations

import numpy as np
from numba import njit

from .simd import f16_at, f32_from_bits, ffma, fzero, hsum, load_bf16x8, load_f16x8, load_f32x8, store_f32x8

ACTIVATION = "f32"


@njit(cache=True, fastmath=False)
def _bf16_at(w, o):
    return f32_from_bits((np.uint32(w[o]) | (np.uint32(w[o + 1]) << np.uint32(8))) << np.uint32(16))


# ---------------------------------------------------------------------------------------------------- F32

@njit(cache=True, fastmath=False)
def dequantize_row_f32(w, y):
    wf = w.view(np.float32)
    for k in range(y.shape[0]):
        y[k] = wf[k]


@njit(cache=True, fastmath=True)
def dot_row_f32(w, x, xq, xd, xs):
    wf = w.view(np.float32)
    acc = fzero()
    n8 = x.shape[0] // 8 * 8
    for k in range(0, n8, 8):
        acc = ffma(acc, load_f32x8(wf, k), load_f32x8(x, k))
    s = hsum(acc)
    for k in range(n8, x.shape[0]):
        s += wf[k] * x[k]
    return s


def quantize_rows_f32(x, out):
    out.view(np.float32)[...] = x


# ---------------------------------------------------------------------------------------------------- F16

@njit(cache=True, fastmath=False)
def dequantize_row_f16(w, y):
    n8 = y.shape[0] // 8 * 8
    for k in range(0, n8, 8):
        store_f32x8(y, k, load_f16x8(w, 2 * k))
    for k in range(n8, y.shape[0]):
        y[k] = f16_at(w, 2 * k)


@njit(cache=True, fastmath=True)
def dot_row_f16(w, x, xq, xd, xs):
    acc = fzero()
    n8 = x.shape[0] // 8 * 8
    for k in range(0, n8, 8):
        acc = ffma(acc, load_f16x8(w, 2 * k), load_f32x8(x, k))
    s = hsum(acc)
    for k in range(n8, x.shape[0]):
        s += f16_at(w, 2 * k) * x[k]
    return s


def quantize_rows_f16(x, out):
    out.view(np.float16)[...] = x.astype(np.float16)


# --------------------------------------------------------------------------------------------------- BF16

@njit(cache=True, fastmath=False)
def dequantize_row_bf16(w, y):
    n8 = y.shape[0] // 8 * 8
    for k in range(0, n8, 8):
        store_f32x8(y, k, load_bf16x8(w, 2 * k))
    for k in range(n8, y.shape[0]):
        y[k] = _bf16_at(w, 2 * k)


@njit(cache=True, fastmath=True)
def dot_row_bf16(w, x, xq, xd, xs):
    acc = fzero()
    n8 = x.shape[0] // 8 * 8
    for k in range(0, n8, 8):
        acc = ffma(acc, load_bf16x8(w, 2 * k), load_f32x8(x, k))
    s = hsum(acc)
    for k in range(n8, x.shape[0]):
        s += _bf16_at(w, 2 * k) * x[k]
    return s


def quantize_rows_bf16(x, out):
    """ggml_compute_fp32_to_bf16: nan stays a quiet nan, otherwise round to nearest even."""
    n = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    nan = (n & 0x7FFFFFFF) > 0x7F800000
    rounded = (n + (0x7FFF + ((n >> 16) & 1))) >> 16
    quiet = (n >> 16) | 64
    out.view(np.uint16)[...] = np.where(nan, quiet, rounded).astype(np.uint16)
