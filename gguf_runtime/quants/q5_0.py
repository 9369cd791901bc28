"""Q5_0: blocks of 32 = half scale d, uint32 of 5th bits, 16 bytes of low nibbles; w = d*(q-16)."""

from __future__ import annotations

import numpy as np
from numba import njit

from .blocks import inverse, signed_absmax, truncate_u8
from .halves import store_f16
from .qblocks import row_kernels
from .simd import load_bits, load_nibbles, vor, vshl, vsub

BLOCK_SIZE, TYPE_SIZE, ACTIVATION = 32, 22, "q8_0"


@njit(cache=True, fastmath=False)
def block_weights(w, o):
    """The 32 values q-16 of the block at w[o] as signed bytes."""
    return vsub(vor(load_nibbles(w, o + 6), vshl(load_bits(w, o + 2), 4)), 16)


dequantize_row, dot_row = row_kernels(__name__, block_weights, TYPE_SIZE, with_min=False)


@njit(cache=True, fastmath=False)
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
