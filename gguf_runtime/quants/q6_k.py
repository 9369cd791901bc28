"""Q6_K: super-blocks of 256 = 128 bytes of low nibbles, 64 bytes of 2-bit high parts, 16 int8 scales (one per
16 values), half d; w = d*sc*(q-32). Per half of 128: element k of each group of 32 takes its nibble from
ql[k] (groups 0, 2: low/high nibble) or ql[32+k] (groups 1, 3) and its high bits from qh[k] >> 2*group."""

from __future__ import annotations

import numpy as np
from numba import njit

from .blocks import nearest_int
from .halves import store_f16
from .kquants import GROUP_MAX_EPS, make_qx_quants
from .simd import (f16_at, fmadd_i, fzero, hsum, iadd, izero, load_u8x32, madd, maddubs, vand, vor, vshl,
                   vshr)

BLOCK_SIZE, TYPE_SIZE, ACTIVATION = 256, 210, "q8_K"


@njit(cache=True)
def dequantize_row(w, y):
    for i in range(w.shape[0] // TYPE_SIZE):
        o, yo = i * TYPE_SIZE, i * 256
        d = f16_at(w, o + 208)
        for n in range(2):
            for k in range(32):
                a, b, h = w[o + 64 * n + k], w[o + 64 * n + 32 + k], w[o + 128 + 32 * n + k]
                q = (np.int32(a & 15) | (np.int32(h & 3) << 4),
                     np.int32(b & 15) | (np.int32((h >> 2) & 3) << 4),
                     np.int32(a >> 4) | (np.int32((h >> 4) & 3) << 4),
                     np.int32(b >> 4) | (np.int32((h >> 6) & 3) << 4))
                for grp in range(4):
                    e = 128 * n + 32 * grp + k
                    sc = np.float32(np.int8(w[o + 192 + e // 16]))
                    y[yo + e] = (d * sc) * np.float32(q[grp] - 32)


@njit(cache=True)
def _group(isum, bias, nib, qh, grp, w, so, xq, xo, xs, g):
    """One group of 32: 6-bit q = nib | high bits, two scales (one per 16)."""
    q = vor(nib, vshl(vand(vshr(qh, 2 * grp), 3), 4))
    s0, s1 = np.int32(np.int8(w[so])), np.int32(np.int8(w[so + 1]))
    isum = iadd(isum, madd(maddubs(q, xq, xo), s0, s1))
    return isum, bias + s0 * xs[g] + s1 * xs[g + 1]


@njit(cache=True)
def dot_row(w, x, xq, xd, xs):
    """d*dx*(sum_s sc_s*(q.xq)_s - 32*sum_s sc_s*bsum_s) per super-block; q stays unsigned (0..63)."""
    acc = fzero()
    biases = np.float32(0)
    for i in range(w.shape[0] // TYPE_SIZE):
        o, xo, g = i * TYPE_SIZE, i * 256, i * 16
        isum = izero()
        bias = 0
        for n in range(2):
            ql0 = load_u8x32(w, o + 64 * n)
            ql1 = load_u8x32(w, o + 64 * n + 32)
            qh = load_u8x32(w, o + 128 + 32 * n)
            so, xn, gn = o + 192 + 8 * n, xo + 128 * n, g + 8 * n
            isum, bias = _group(isum, bias, vand(ql0, 15), qh, 0, w, so, xq, xn, xs, gn)
            isum, bias = _group(isum, bias, vand(ql1, 15), qh, 1, w, so + 2, xq, xn + 32, xs, gn + 2)
            isum, bias = _group(isum, bias, vshr(ql0, 4), qh, 2, w, so + 4, xq, xn + 64, xs, gn + 4)
            isum, bias = _group(isum, bias, vshr(ql1, 4), qh, 3, w, so + 6, xq, xn + 96, xs, gn + 6)
        dd = f16_at(w, o + 208) * xd[i]
        acc = fmadd_i(acc, isum, dd)
        biases += dd * np.float32(bias)
    return hsum(acc) - np.float32(32) * biases


@njit(cache=True)
def quantize_rows(x, out):
    """quantize_row_q6_K_ref: make_qx_quants(16 values, nmax 32) per group, int8 scales, then requantize."""
    f32 = np.float32
    L = np.zeros(256, np.int8)
    scales = np.zeros(16, np.float32)
    for r in range(x.shape[0]):
        for i in range(x.shape[1] // 256):
            xb, w, o = x[r, 256 * i:256 * (i + 1)], out[r], TYPE_SIZE * i
            max_scale = f32(0)
            max_abs_scale = f32(0)
            for ib in range(16):
                s = make_qx_quants(16, 32, xb, 16 * ib, L)
                scales[ib] = s
                if abs(s) > max_abs_scale:
                    max_abs_scale = abs(s)
                    max_scale = s
            w[o:o + TYPE_SIZE] = 0
            if max_abs_scale < GROUP_MAX_EPS:
                continue
            iscale = f32(-128) / max_scale
            d = store_f16(w, o + 208, f32(1) / iscale)
            for ib in range(16):
                w[o + 192 + ib] = np.uint8(min(127, nearest_int(iscale * scales[ib])) & 255)
            for j in range(16):
                dj = d * f32(np.int8(w[o + 192 + j]))
                if dj == 0:
                    continue
                for k in range(16):
                    L[16 * j + k] = max(-32, min(31, nearest_int(xb[16 * j + k] / dj))) + 32
            for n in range(2):
                for k in range(32):
                    e = 128 * n + k
                    q1, q2, q3, q4 = L[e], L[e + 32], L[e + 64], L[e + 96]
                    w[o + 64 * n + k] = (q1 & 15) | ((q3 & 15) << 4)
                    w[o + 64 * n + 32 + k] = (q2 & 15) | ((q4 & 15) << 4)
                    w[o + 128 + 32 * n + k] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6)
