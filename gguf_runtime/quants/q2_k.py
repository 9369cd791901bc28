"""Q2_K: super-blocks of 256 = 16 bytes of 4-bit scale | 4-bit min (one per 16 values), 64 bytes of 2-bit q,
half d, half dmin; w = d*sc*q - dmin*m. Element 128n + 32j + k has q = (qs[32n + k] >> 2j) & 3."""

from __future__ import annotations

import numpy as np
from numba import njit

from .blocks import nearest_int
from .halves import store_f16
from .kquants import make_qkx2_quants
from .simd import (f16_at, fmadd_i, fzero, hsum, iadd, izero, lane, load_i16x16, load_u8x32, madd, madd_v, maddubs,
                   store_scaled, vand, vshr, widen_u8)

BLOCK_SIZE, TYPE_SIZE, ACTIVATION = 256, 84, "q8_K"


@njit(cache=True, fastmath=False)
def dequantize_row(w, y):
    for i in range(w.shape[0] // TYPE_SIZE):
        o, yo = i * TYPE_SIZE, i * 256
        d, dmin = f16_at(w, o + 80), f16_at(w, o + 82)
        for n in range(2):
            q = load_u8x32(w, o + 16 + 32 * n)
            for j in range(4):
                s = o + 8 * n + 2 * j
                d0, m0 = d * np.float32(w[s] & 15), dmin * np.float32(w[s] >> 4)
                d1, m1 = d * np.float32(w[s + 1] & 15), dmin * np.float32(w[s + 1] >> 4)
                store_scaled(y, yo + 128 * n + 32 * j, vand(vshr(q, 2 * j), 3), d0, m0, d1, m1)

@njit(cache=True, fastmath=False)
def dot_row(w, x, xq, xd, xs):
    acc = fzero()
    for i in range(w.shape[0] // TYPE_SIZE):
        o, xo = i * TYPE_SIZE, i * 256
        packed = widen_u8(w, o)
        scales, mins = vand(packed, 15), vshr(packed, 4)
        isum = izero()
        for n in range(2):
            q = load_u8x32(w, o + 16 + 32 * n)
            for j in range(4):
                s = 8 * n + 2 * j
                p = maddubs(vand(vshr(q, 2 * j), 3), xq, xo + 128 * n + 32 * j)
                isum = iadd(isum, madd(p, lane(scales, s), lane(scales, s + 1)))
        acc = fmadd_i(acc, isum, f16_at(w, o + 80) * xd[i])
        acc = fmadd_i(acc, madd_v(mins, load_i16x16(xs, 16 * i)), -(f16_at(w, o + 82) * xd[i]))
    return hsum(acc)


@njit(cache=True, fastmath=False)
def pack_2bit(L, w, o):
    """qs[32n + k] = L[128n+k] | L[128n+32+k] << 2 | L[128n+64+k] << 4 | L[128n+96+k] << 6 (Q2_K and Q3_K)."""
    for n in range(2):
        for k in range(32):
            e = 128 * n + k
            w[o + 32 * n + k] = L[e] | (L[e + 32] << 2) | (L[e + 64] << 4) | (L[e + 96] << 6)


@njit(cache=True, fastmath=False)
def quantize_rows(x, out):
    """quantize_row_q2_K_ref: make_qkx2_quants(16 values, nmax 3, |x| weights), 4-bit scales and mins."""
    f32 = np.float32
    L = np.zeros(256, np.uint8)
    Laux = np.zeros(16, np.uint8)
    weights = np.zeros(16, np.float32)
    scales = np.zeros(16, np.float32)
    mins = np.zeros(16, np.float32)
    for r in range(x.shape[0]):
        for i in range(x.shape[1] // 256):
            xb, w, o = x[r, 256 * i:256 * (i + 1)], out[r], TYPE_SIZE * i
            max_scale = f32(0)
            max_min = f32(0)
            for j in range(16):
                for k in range(16):
                    weights[k] = abs(xb[16 * j + k])
                scales[j], mins[j] = make_qkx2_quants(16, 3, xb, 16 * j, weights, L, Laux, -0.5, 0.1, 15, True)
                max_scale = max(max_scale, scales[j])
                max_min = max(max_min, mins[j])
            w[o:o + 16] = 0
            if max_scale > 0:
                iscale = f32(15) / max_scale
                for j in range(16):
                    w[o + j] = nearest_int(iscale * scales[j])
            d = store_f16(w, o + 80, max_scale / f32(15) if max_scale > 0 else f32(0))
            if max_min > 0:
                iscale = f32(15) / max_min
                for j in range(16):
                    w[o + j] |= nearest_int(iscale * mins[j]) << 4
            dmin = store_f16(w, o + 82, max_min / f32(15) if max_min > 0 else f32(0))
            for j in range(16):
                dj = d * f32(w[o + j] & 15)
                if dj == 0:
                    continue
                dm = dmin * f32(w[o + j] >> 4)
                for k in range(16):
                    L[16 * j + k] = max(0, min(3, nearest_int((xb[16 * j + k] + dm) / dj)))
            pack_2bit(L, w, o + 16)
