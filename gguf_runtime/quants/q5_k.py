"""Q5_K: super-blocks of 256 = half d, half dmin, 12 bytes of packed 6-bit scales/mins (8 sub-blocks of 32),
32 bytes of 5th bits (bit 2j / 2j+1 of byte k: element k of sub-block 2j / 2j+1), 128 bytes of low nibbles
laid out as in Q4_K; w = d*sc*q - dmin*m."""

from __future__ import annotations

import numpy as np
from numba import njit

from .blocks import nearest_int
from .halves import store_f16
from .kquants import make_qkx2_quants, pack_scale_min_k4, scale_min_k4, scales_mins_k4
from .simd import (f16_at, fmadd_i, fzero, hsum, iadd, izero, lane, load_i16x16, load_u8x32, madd, madd_v, maddubs,
                   store_scaled, vand, vor, vshl, vshr)

BLOCK_SIZE, TYPE_SIZE, ACTIVATION = 256, 176, "q8_K"


@njit(cache=True, fastmath=False)
def dequantize_row(w, y):
    for i in range(w.shape[0] // TYPE_SIZE):
        o, yo = i * TYPE_SIZE, i * 256
        d, dmin = f16_at(w, o), f16_at(w, o + 2)
        qh = load_u8x32(w, o + 16)
        for j in range(4):
            sc0, m0 = scale_min_k4(2 * j, w, o + 4)
            sc1, m1 = scale_min_k4(2 * j + 1, w, o + 4)
            d0, min0 = d * np.float32(sc0), dmin * np.float32(m0)
            d1, min1 = d * np.float32(sc1), dmin * np.float32(m1)
            q = load_u8x32(w, o + 48 + 32 * j)
            lo = vor(vand(q, 15), vshl(vand(vshr(qh, 2 * j), 1), 4))
            hi = vor(vshr(q, 4), vshl(vand(vshr(qh, 2 * j + 1), 1), 4))
            store_scaled(y, yo + 64 * j, lo, d0, min0, d0, min0)
            store_scaled(y, yo + 64 * j + 32, hi, d1, min1, d1, min1)

@njit(cache=True, fastmath=False)
def dot_row(w, x, xq, xd, xs):
    acc = fzero()
    for i in range(w.shape[0] // TYPE_SIZE):
        o, xo = i * TYPE_SIZE, i * 256
        scales, mins2 = scales_mins_k4(w, o + 4)
        qh = load_u8x32(w, o + 16)
        isum = izero()
        for j in range(4):
            q = load_u8x32(w, o + 48 + 32 * j)
            lo = vor(vand(q, 15), vshl(vand(vshr(qh, 2 * j), 1), 4))
            hi = vor(vshr(q, 4), vshl(vand(vshr(qh, 2 * j + 1), 1), 4))
            # scale of sub-block s: lanes s and 8+s (kquants.scales_mins_k4), one in-lane shuffle
            isum = iadd(isum, madd(maddubs(lo, xq, xo + 64 * j), lane(scales, 2 * j), lane(scales, 2 * j + 8)))
            isum = iadd(isum, madd(maddubs(hi, xq, xo + 64 * j + 32), lane(scales, 2 * j + 1), lane(scales, 2 * j + 9)))
        acc = fmadd_i(acc, isum, f16_at(w, o) * xd[i])
        acc = fmadd_i(acc, madd_v(mins2, load_i16x16(xs, 16 * i)), -(f16_at(w, o + 2) * xd[i]))
    return hsum(acc)


@njit(cache=True, fastmath=False)
def quantize_rows(x, out):
    """quantize_row_q5_K_ref: per sub-block make_qkx2_quants(nmax 31), then 6-bit scales/mins."""
    f32 = np.float32
    L = np.zeros(256, np.uint8)
    Laux = np.zeros(32, np.uint8)
    weights = np.zeros(32, np.float32)
    scales = np.zeros(8, np.float32)
    mins = np.zeros(8, np.float32)
    ls = np.zeros(8, np.uint8)
    lm = np.zeros(8, np.uint8)
    for r in range(x.shape[0]):
        for i in range(x.shape[1] // 256):
            xb, w, o = x[r, 256 * i:256 * (i + 1)], out[r], TYPE_SIZE * i
            max_scale = f32(0)
            max_min = f32(0)
            for j in range(8):
                sum_x2 = f32(0)
                for k in range(32):
                    sum_x2 += xb[32 * j + k] * xb[32 * j + k]
                av_x = np.sqrt(sum_x2 / f32(32))
                for k in range(32):
                    weights[k] = av_x + abs(xb[32 * j + k])
                scales[j], mins[j] = make_qkx2_quants(32, 31, xb, 32 * j, weights, L, Laux, -0.5, 0.1, 15, False)
                max_scale = max(max_scale, scales[j])
                max_min = max(max_min, mins[j])
            inv_scale = f32(63) / max_scale if max_scale > 0 else f32(0)
            inv_min = f32(63) / max_min if max_min > 0 else f32(0)
            for j in range(8):
                ls[j] = min(63, nearest_int(inv_scale * scales[j]))
                lm[j] = min(63, nearest_int(inv_min * mins[j]))
            w[o + 4:o + 16] = 0
            pack_scale_min_k4(ls, lm, w, o + 4)
            d = store_f16(w, o, max_scale / f32(63))
            dmin = store_f16(w, o + 2, max_min / f32(63))
            for j in range(8):
                sc, m = scale_min_k4(j, w, o + 4)
                dj = d * f32(sc)
                if dj == 0:
                    continue
                dm = dmin * f32(m)
                for k in range(32):
                    L[32 * j + k] = max(0, min(31, nearest_int((xb[32 * j + k] + dm) / dj)))
            w[o + 16:o + 48] = 0
            for j in range(4):
                for k in range(32):
                    lo, hi = L[64 * j + k], L[64 * j + 32 + k]
                    w[o + 16 + k] |= ((lo >> 4) << (2 * j)) | ((hi >> 4) << (2 * j + 1))
                    w[o + 48 + 32 * j + k] = (lo & 15) | ((hi & 15) << 4)
