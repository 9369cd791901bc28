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
from .simd import (f16_at, fmadd_i, fzero, hsum, iadd, izero, lane, load_i16x16, load_u8x32, madd, madd_v, maddubs,
                   store_scaled, u32_at, vand, vor, vshl, vshr, vsub, widen_u32x4)

BLOCK_SIZE, TYPE_SIZE, ACTIVATION = 256, 110, "q8_K"


@njit(cache=True, fastmath=False)
def scale(s, w, o):
    """Signed 6-bit scale s (0..15) from the 12 packed bytes at w[o:o+12]."""
    low = np.int32(w[o + s] & 15) if s < 8 else np.int32(w[o + s - 8] >> 4)
    high = np.int32((w[o + 8 + s % 4] >> (2 * (s // 4))) & 3)
    return (low | (high << 4)) - 32


@njit(cache=True, fastmath=False)
def dequantize_row(w, y):
    for i in range(w.shape[0] // TYPE_SIZE):
        o, yo = i * TYPE_SIZE, i * 256
        d = f16_at(w, o + 108)
        hm = load_u8x32(w, o)
        for n in range(2):
            q = load_u8x32(w, o + 32 + 32 * n)
            for j in range(4):
                s = 8 * n + 2 * j
                v = vsub(vor(vand(vshr(q, 2 * j), 3), vshl(vand(vshr(hm, 4 * n + j), 1), 2)), 4)
                d0, d1 = d * np.float32(scale(s, w, o + 96)), d * np.float32(scale(s + 1, w, o + 96))
                store_scaled(y, yo + 128 * n + 32 * j, v, d0, np.float32(0), d1, np.float32(0))

@njit(cache=True, fastmath=False)
def scales16(w, o):
    """All 16 signed scales from w[o:o+12] as one I16x16 (scale() for every s, 4 bytes at a time)."""
    a, b, c = u32_at(w, o), u32_at(w, o + 4), u32_at(w, o + 8)
    low4, top2 = np.uint32(0x0F0F0F0F), np.uint32(0x03030303)
    s0 = (a & low4) | ((c & top2) << np.uint32(4))
    s1 = (b & low4) | (((c >> np.uint32(2)) & top2) << np.uint32(4))
    s2 = ((a >> np.uint32(4)) & low4) | (((c >> np.uint32(4)) & top2) << np.uint32(4))
    s3 = ((b >> np.uint32(4)) & low4) | (((c >> np.uint32(6)) & top2) << np.uint32(4))
    return vsub(widen_u32x4(s0, s1, s2, s3), 32)


@njit(cache=True, fastmath=False)
def dot_row(w, x, xq, xd, xs):
    """q stays unsigned (0..7) in the integer dot; the -4 offset comes back through the bsums."""
    acc = fzero()
    for i in range(w.shape[0] // TYPE_SIZE):
        o, xo = i * TYPE_SIZE, i * 256
        scales = scales16(w, o + 96)
        hm = load_u8x32(w, o)
        isum = izero()
        for n in range(2):
            q = load_u8x32(w, o + 32 + 32 * n)
            for j in range(4):
                s = 8 * n + 2 * j
                v = vor(vand(vshr(q, 2 * j), 3), vshl(vand(vshr(hm, 4 * n + j), 1), 2))
                isum = iadd(isum, madd(maddubs(v, xq, xo + 128 * n + 32 * j), lane(scales, s), lane(scales, s + 1)))
        dd = f16_at(w, o + 108) * xd[i]
        acc = fmadd_i(acc, isum, dd)
        acc = fmadd_i(acc, madd_v(scales, load_i16x16(xs, 16 * i)), np.float32(-4) * dd)
    return hsum(acc)


@njit(cache=True, fastmath=False)
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
