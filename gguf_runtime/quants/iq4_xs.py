"""IQ4_XS: super-blocks of 256 = half d, uint16 of high scale bits, 4 bytes of low scale nibbles (8 groups of
32, 6-bit scales minus 32), 128 bytes of IQ4_NL indices (16 per group, low nibbles first);
w = d*(ls-32)*KVALUES[q]."""

from __future__ import annotations

import numpy as np
from numba import njit

from .iq4_nl import KVALUES, KVALUES_X2, quantize_groups
from .simd import (f16_at, fmadd_i, fzero, hsum, iadd, izero, load_nibbles, load_u8x32, lookup16, madd, maddubs_s8,
                   store_scaled)

BLOCK_SIZE, TYPE_SIZE, ACTIVATION = 256, 136, "q8_K"


@njit(cache=True, fastmath=False)
def group_scale(ib, w, o):
    """The signed 6-bit scale of group ib (0..7) of the super-block at w[o]."""
    low = np.int32(w[o + 4 + ib // 2] >> (4 * (ib % 2))) & 15
    high = np.int32(w[o + 2 + ib // 4] >> (2 * (ib % 4))) & 3
    return (low | (high << 4)) - 32


@njit(cache=True, fastmath=False)
def dequantize_row(w, y):
    table = load_u8x32(KVALUES_X2, 0)
    for i in range(w.shape[0] // TYPE_SIZE):
        o, yo = i * TYPE_SIZE, i * 256
        d = f16_at(w, o)
        for ib in range(8):
            dl = d * np.float32(group_scale(ib, w, o))
            q = lookup16(table, load_nibbles(w, o + 8 + 16 * ib))
            store_scaled(y, yo + 32 * ib, q, dl, np.float32(0), dl, np.float32(0))

@njit(cache=True, fastmath=False)
def dot_row(w, x, xq, xd, xs):
    table = load_u8x32(KVALUES_X2, 0)
    acc = fzero()
    for i in range(w.shape[0] // TYPE_SIZE):
        o, xo = i * TYPE_SIZE, i * 256
        isum = izero()
        for ib in range(8):
            s = group_scale(ib, w, o)
            v = lookup16(table, load_nibbles(w, o + 8 + 16 * ib))
            isum = iadd(isum, madd(maddubs_s8(v, xq, xo + 32 * ib), s, s))
        acc = fmadd_i(acc, isum, f16_at(w, o) * xd[i])
    return hsum(acc)


@njit(cache=True, fastmath=False)
def quantize_rows(x, out):
    """quantize_iq4_xs without imatrix."""
    L = np.zeros(256, np.uint8)
    weight = np.zeros(32, np.float32)
    scales = np.zeros(8, np.float32)
    for r in range(x.shape[0]):
        for i in range(x.shape[1] // 256):
            o = TYPE_SIZE * i
            out[r, o:o + TYPE_SIZE] = 0
            quantize_groups(x[r, 256 * i:256 * (i + 1)], out[r], o, 8, o + 8, scales, weight, L)
