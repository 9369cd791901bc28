"""Q3_K: super-blocks of 256 = 32 bytes of high bits (bit 4n+j of byte k: element 128n+32j+k), 64 bytes of
2-bit low parts (as Q2_K), 12 bytes of packed 6-bit signed scales (one per 16), half d;
w = d*(sc-32)*(low + 4*high - 4)."""

from __future__ import annotations

import numpy as np
from numba import njit

from .blocks import nearest_int
from .halves import store_f16
from .kquants import make_q3_quants
from .q2_k import pack_2bit
from .simd import (f16_at, fmadd_i, fzero, hsum, iadd, izero, load_u8x32, madd, maddubs, vand, vor, vshl,
                   vshr)

BLOCK_SIZE, TYPE_SIZE, ACTIVATION = 256, 110, "q8_K"


@njit(cache=True)
def scale(s, w, o):
    """Signed 6-bit scale s (0..15) from the 12 packed bytes at w[o:o+12]."""
    low = np.int32(w[o + s] & 15) if s < 8 else np.int32(w[o + s - 8] >> 4)
    high = np.int32((w[o + 8 + s % 4] >> (2 * (s // 4))) & 3)
    return (low | (high << 4)) - 32


@njit(cache=True)
def dequantize_row(w, y):
    for i in range(w.shape[0] // TYPE_SIZE):
        o, yo = i * TYPE_SIZE, i * 256
        d = f16_at(w, o + 108)
        for s in range(16):
            dl = d * np.float32(scale(s, w, o + 96))
            for k in range(16):
                e = 16 * s + k
                n, j, b = e // 128, (e // 32) % 4, e % 32
                low = np.int32((w[o + 32 + 32 * n + b] >> (2 * j)) & 3)
                high = np.int32((w[o + b] >> (4 * n + j)) & 1)
                y[yo + e] = dl * np.float32(low - 4 + 4 * high)


@njit(cache=True)
def dot_row(w, x, xq, xd, xs):
    """q stays unsigned (0..7) in the integer dot; the -4 offset comes back through the bsums."""
    acc = fzero()
    biases = np.float32(0)
    for i in range(w.shape[0] // TYPE_SIZE):
        o, xo, g = i * TYPE_SIZE, i * 256, i * 16
        hm = load_u8x32(w, o)
        isum = izero()
        bias = 0
        for n in range(2):
            q = load_u8x32(w, o + 32 + 32 * n)
            for j in range(4):
                s = 8 * n + 2 * j
                s0, s1 = scale(s, w, o + 96), scale(s + 1, w, o + 96)
                v = vor(vand(vshr(q, 2 * j), 3), vshl(vand(vshr(hm, 4 * n + j), 1), 2))
                isum = iadd(isum, madd(maddubs(v, xq, xo + 128 * n + 32 * j), s0, s1))
                bias += s0 * xs[g + s] + s1 * xs[g + s + 1]
        dd = f16_at(w, o + 108) * xd[i]
        acc = fmadd_i(acc, isum, dd)
        biases += dd * np.float32(bias)
    return hsum(acc) - np.float32(4) * biases


@njit(cache=True)
def quantize_rows(x, out):
    """quantize_row_q3_K_ref: make_q3_quants(16 values, nmax 4), 6-bit signed scales, then requantize."""
    f32 = np.float32
    L = np.zeros(256, np.int8)
    scales = np.zeros(16, np.float32)
    for r in range(x.shape[0]):
        for i in range(x.shape[1] // 256):
            xb, w, o = x[r, 256 * i:256 * (i + 1)], out[r], TYPE_SIZE * i
            max_scale = f32(0)
            amax = f32(0)
            for j in range(16):
                scales[j] = make_q3_quants(16, 4, xb, 16 * j, L)
                if abs(scales[j]) > amax:
                    amax = abs(scales[j])
                    max_scale = scales[j]
            w[o:o + TYPE_SIZE] = 0
            if max_scale != 0:
                iscale = f32(-32) / max_scale
                for j in range(16):
                    lv = max(-32, min(31, nearest_int(iscale * scales[j]))) + 32
                    if j < 8:
                        w[o + 96 + j] = lv & 15
                    else:
                        w[o + 96 + j - 8] |= (lv & 15) << 4
                    w[o + 96 + 8 + j % 4] |= (lv >> 4) << (2 * (j // 4))
                d = store_f16(w, o + 108, f32(1) / iscale)
            else:
                d = f32(0)
            for j in range(16):
                dj = d * f32(scale(j, w, o + 96))
                if dj == 0:
                    continue
                for k in range(16):
                    L[16 * j + k] = max(-4, min(3, nearest_int(xb[16 * j + k] / dj))) + 4
            for e in range(256):
                if L[e] > 3:
                    w[o + e % 32] |= 1 << (e // 32)
                    L[e] -= 4
            pack_2bit(L, w, o + 32)
