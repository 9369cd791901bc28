"""Q4_1: blocks of 32 = half scale d, half min m, 16 bytes of 4-bit q (low nibbles first); w = d*q + m."""

from __future__ import annotations

import numpy as np
from numba import njit

from .blocks import inverse, min_max, truncate_u8
from .halves import store_f16
from .qblocks import row_kernels
from .simd import load_nibbles

BLOCK_SIZE, TYPE_SIZE, ACTIVATION = 32, 20, "q8_0"


@njit(cache=True, fastmath=False)
def block_weights(w, o):
    """The 32 unsigned values q of the block at w[o]."""
    return load_nibbles(w, o + 4)


dequantize_row, dot_row = row_kernels(__name__, block_weights, TYPE_SIZE, with_min=True)


@njit(cache=True, fastmath=False)
def quantize_rows(x, out):
    """quantize_row_q4_1_ref: d = (max - min) / 15, m = min."""
    for r in range(x.shape[0]):
        xr, w = x[r], out[r]
        for b in range(xr.shape[0] // 32):
            o, wo = 32 * b, TYPE_SIZE * b
            lo, hi = min_max(xr, o, 32)
            d = (hi - lo) / np.float32(15)
            inv = inverse(d)
            store_f16(w, wo, d)
            store_f16(w, wo + 2, lo)
            for j in range(16):
                q0 = truncate_u8((xr[o + j] - lo) * inv + np.float32(0.5), 15)
                q1 = truncate_u8((xr[o + 16 + j] - lo) * inv + np.float32(0.5), 15)
                w[wo + 4 + j] = q0 | (q1 << 4)
