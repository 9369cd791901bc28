"""Q8_0: blocks of 32 = half scale d, 32 int8 q; w = d*q."""

from __future__ import annotations

import numpy as np
from numba import njit

from .blocks import inverse, round_half_away
from .halves import store_f16
from .simd import f16_at, fmadd_i, fzero, hsum, load_u8x32, madd, maddubs_s8, store_scaled

BLOCK_SIZE, TYPE_SIZE, ACTIVATION = 32, 34, "q8_0"


@njit(cache=True)
def block_weights(w, o):
    """The 32 signed bytes q of the block at w[o]."""
    return load_u8x32(w, o + 2)


@njit(cache=True)
def dequantize_row(w, y):
    for b in range(w.shape[0] // TYPE_SIZE):
        o = b * TYPE_SIZE
        d = f16_at(w, o)
        store_scaled(y, 32 * b, block_weights(w, o), d, np.float32(0), d, np.float32(0))


@njit(cache=True)
def dot_row(w, x, xq, xd, xs):
    acc = fzero()
    for b in range(w.shape[0] // TYPE_SIZE):
        o = b * TYPE_SIZE
        acc = fmadd_i(acc, madd(maddubs_s8(block_weights(w, o), xq, 32 * b), 1, 1), f16_at(w, o) * xd[b])
    return hsum(acc)


@njit(cache=True)
def quantize_rows(x, out):
    """quantize_row_q8_0_ref: d = max|x| / 127, q = roundf(x/d)."""
    for r in range(x.shape[0]):
        xr, w = x[r], out[r]
        for b in range(xr.shape[0] // 32):
            o, wo = 32 * b, TYPE_SIZE * b
            amax = np.float32(0)
            for j in range(32):
                amax = max(amax, abs(xr[o + j]))
            d = amax / np.float32(127)
            inv = inverse(d)
            store_f16(w, wo, d)
            for j in range(32):
                w[wo + 2 + j] = np.uint8(np.int32(round_half_away(xr[o + j] * inv)) & 255)
