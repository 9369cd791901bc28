"""Q4_0: blocks of 32 = half scale d, 16 bytes of 4-bit q (low nibbles: values 0..15, high: 16..31); w = d*(q-8)."""

from __future__ import annotations

import numpy as np
from numba import njit

from .blocks import inverse, signed_absmax, truncate_u8
from .halves import store_f16
from .qblocks import row_kernels
from .simd import load_nibbles, vsub

BLOCK_SIZE, TYPE_SIZE, ACTIVATION = 32, 18, "q8_0"


@njit(cache=True, fastmath=False)
def block_weights(w, o):
    """The 32 values q-8 of the block at w[o] as signed bytes."""
    return vsub(load_nibbles(w, o + 2), 8)


dequantize_row, dot_row = row_kernels(__name__, block_weights, TYPE_SIZE, with_min=False)


@njit(cache=True, fastmath=False)
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
