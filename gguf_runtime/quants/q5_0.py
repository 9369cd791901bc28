"""Q5_0: blocks of 32 = half scale d, uint32 of 5th bits, 16 bytes of low nibbles; w = d*(q-16)."""

from __future__ import annotations

import numpy as np
from numba import njit

from .blocks import inverse, signed_absmax, truncate_u8
from .halves import store_f16
from .simd import f16_at, fmadd_i, fzero, hsum, load_bits, load_nibbles, madd, maddubs, u32_at, vor, vshl

BLOCK_SIZE, TYPE_SIZE, ACTIVATION = 32, 22, "q8_0"


@njit(cache=True)
def dequantize_row(w, y):
    for b in range(w.shape[0] // TYPE_SIZE):
        o, yo = b * TYPE_SIZE, b * 32
        d = f16_at(w, o)
        qh = u32_at(w, o + 2)
        for j in range(16):
            q = w[o + 6 + j]
            lo = np.int32(q & 15) | np.int32(((qh >> np.uint32(j)) & np.uint32(1)) << np.uint32(4))
            hi = np.int32(q >> 4) | np.int32(((qh >> np.uint32(j + 16)) & np.uint32(1)) << np.uint32(4))
            y[yo + j] = d * np.float32(lo - 16)
            y[yo + 16 + j] = d * np.float32(hi - 16)


@njit(cache=True)
def dot_row(w, x, xq, xd, xs):
    acc = fzero()
    bias = np.float32(0)
    for b in range(w.shape[0] // TYPE_SIZE):
        o = b * TYPE_SIZE
        dd = f16_at(w, o) * xd[b]
        q = vor(load_nibbles(w, o + 6), vshl(load_bits(w, o + 2), 4))
        acc = fmadd_i(acc, madd(maddubs(q, xq, 32 * b), 1, 1), dd)
        bias += dd * np.float32(xs[2 * b] + xs[2 * b + 1])
    return hsum(acc) - np.float32(16) * bias


@njit(cache=True)
def quantize_rows(x, out):
    """quantize_row_q5_0_ref: d = (value of largest magnitude) / -16."""
    for r in range(x.shape[0]):
        xr, w = x[r], out[r]
        for b in range(xr.shape[0] // 32):
            o, wo = 32 * b, TYPE_SIZE * b
            d = signed_absmax(xr, o, 32) / np.float32(-16)
            inv = inverse(d)
            store_f16(w, wo, d)
            qh = 0
            for j in range(16):
                q0 = truncate_u8(xr[o + j] * inv + np.float32(16.5), 31)
                q1 = truncate_u8(xr[o + 16 + j] * inv + np.float32(16.5), 31)
                w[wo + 6 + j] = (q0 & 15) | ((q1 & 15) << 4)
                qh |= (np.int64(q0) >> 4) << j
                qh |= (np.int64(q1) >> 4) << (j + 16)
            for k in range(4):
                w[wo + 2 + k] = (qh >> (8 * k)) & 255
