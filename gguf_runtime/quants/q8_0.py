"""Q8_0: blocks of 32 = half scale d, 32 int8 q; w = d*q."""

from __future__ import annotations

import numpy as np
from numba import njit

from .blocks import inverse, round_half_away
from .halves import store_f16
from .qblocks import row_kernels
from .simd import load_u8x32

BLOCK_SIZE, TYPE_SIZE, ACTIVATION = 32, 34, "q8_0"


@njit(cache=True, fastmath=False)
def block_weights(w, o):
    """The 32 signed bytes q of the block at w[o]."""
    return load_u8x32(w, o + 2)


dequantize_row, dot_row = row_kernels(__name__, block_weights, TYPE_SIZE, with_min=False)


@njit(cache=True, fastmath=False)
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
