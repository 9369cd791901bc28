"""Q4_0: blocks of 32 = half scale d, 16 bytes of 4-bit q (low nibbles: values 0..15, high: 16..31); w = d*(q-8)."""

from __future__ import annotations

import numpy as np
from numba import njit

from .blocks import inverse, signed_absmax, truncate_u8
from .halves import store_f16
from .simd import f16_at, fmadd_i, fzero, hsum, load_nibbles, madd, maddubs_s8, store_scaled, vsub

BLOCK_SIZE, TYPE_SIZE, ACTIVATION = 32, 18, "q8_0"


@njit(cache=True)
def block_weights(w, o):
    """The 32 values q-8 of the block at w[o] as signed bytes."""
    return vsub(load_nibbles(w, o + 2), 8)


@njit(cache=True)
def dequantize_row(w, y):
    for b in range(w.shape[0] // TYPE_SIZE):
        o = b * TYPE_SIZE
        d = f16_at(w, o)
        store_scaled(y, 32 * b, block_weights(w, o), d, np.float32(0), d, np.float32(0))


@njit(cache=True)
def dot_row(w, x, xq, xd, xs):
    """sum_b d_w*d_x*((q-8).xq), integer dot per block."""
    acc = fzero()
    for b in range(w.shape[0] // TYPE_SIZE):
        o = b * TYPE_SIZE
        acc = fmadd_i(acc, madd(maddubs_s8(block_weights(w, o), xq, 32 * b), 1, 1), f16_at(w, o) * xd[b])
    return hsum(acc)


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
