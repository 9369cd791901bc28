"""Q4_0: blocks of 32 = half scale d, 16 bytes of 4-bit q (low nibbles: values 0..15, high: 16..31); w = d*(q-8)."""

from __future__ import annotations

import numpy as np
from numba import njit

from .blocks import inverse, signed_absmax, truncate_u8
from .halves import store_f16
from .simd import f16_at, fmadd_i, fzero, hsum, load_nibbles, madd, maddubs

BLOCK_SIZE, TYPE_SIZE, ACTIVATION = 32, 18, "q8_0"


@njit(cache=True)
def dequantize_row(w, y):
    for b in range(w.shape[0] // TYPE_SIZE):
        o, yo = b * TYPE_SIZE, b * 32
        d = f16_at(w, o)
        for j in range(16):
            q = w[o + 2 + j]
            y[yo + j] = d * np.float32(np.int32(q & 15) - 8)
            y[yo + 16 + j] = d * np.float32(np.int32(q >> 4) - 8)


@njit(cache=True)
def dot_row(w, x, xq, xd, xs):
    """sum_b d_w*d_x*(q.xq - 8*sum(xq)), integer dot per block."""
    acc = fzero()
    bias = np.float32(0)
    for b in range(w.shape[0] // TYPE_SIZE):
        o = b * TYPE_SIZE
        dd = f16_at(w, o) * xd[b]
        acc = fmadd_i(acc, madd(maddubs(load_nibbles(w, o + 2), xq, 32 * b), 1, 1), dd)
        bias += dd * np.float32(xs[2 * b] + xs[2 * b + 1])
    return hsum(acc) - np.float32(8) * bias


@njit(cache=True)
def quantize_rows(x, out):
    """quantize_row_q4_0_ref: d = (value of largest magnitude) / -8."""
    for r in range(x.shape[0]):
        xr, w = x[r], out[r]
        for b in range(xr.shape[0] // 32):
            o, wo = 32 * b, TYPE_SIZE * b
            d = signed_absmax(xr, o, 32) / np.float32(-8)
            inv = inverse(d)
            store_f16(w, wo, d)
            for j in range(16):
                lo = truncate_u8(xr[o + j] * inv + np.float32(8.5), 15)
                hi = truncate_u8(xr[o + 16 + j] * inv + np.float32(8.5), 15)
                w[wo + 2 + j] = lo | (hi << 4)
