"""Q5_1: blocks of 32 = half scale d, half min m, uint32 of 5th bits, 16 bytes of low nibbles; w = d*q + m."""

from __future__ import annotations

import numpy as np
from numba import njit

from .blocks import inverse, min_max, truncate_u8
from .halves import store_f16
from .qblocks import row_kernels
from .simd import load_bits, load_nibbles, vor, vshl

BLOCK_SIZE, TYPE_SIZE, ACTIVATION = 32, 24, "q8_0"


@njit(cache=True, fastmath=False)
def block_weights(w, o):
    """The 32 unsigned 5-bit values q of the block at w[o]."""
    return vor(load_nibbles(w, o + 8), vshl(load_bits(w, o + 4), 4))


dequantize_row, dot_row = row_kernels(__name__, block_weights, TYPE_SIZE, with_min=True)


@njit(cache=True, fastmath=False)
def quantize_rows(x, out):
    """quantize_row_q5_1_ref: d = (max - min) / 31, m = min."""
    for r in range(x.shape[0]):
        xr, w = x[r], out[r]
        for b in range(xr.shape[0] // 32):
            o, wo = 32 * b, TYPE_SIZE * b
            lo, hi = min_max(xr, o, 32)
            d = (hi - lo) / np.float32(31)
            inv = inverse(d)
            store_f16(w, wo, d)
            store_f16(w, wo + 2, lo)
            qh = 0
            for j in range(16):
                q0 = truncate_u8((xr[o + j] - lo) * inv + np.float32(0.5), 31)
                q1 = truncate_u8((xr[o + 16 + j] - lo) * inv + np.float32(0.5), 31)
                w[wo + 8 + j] = (q0 & 15) | ((q1 & 15) << 4)
                qh |= (np.int64(q0) >> 4) << j
                qh |= (np.int64(q1) >> 4) << (j + 16)
            for k in range(4):
                w[wo + 4 + k] = (qh >> (8 * k)) & 255
