"""IQ4_NL: blocks of 32 = half d, 16 bytes of 4-bit indices into a fixed non-linear table (low nibbles: values
0..15, high: 16..31); w = d*KVALUES[q]. Also home of the IQ4 quantizer shared with IQ4_XS."""

from __future__ import annotations

import numpy as np
from numba import njit

from .blocks import nearest_int
from .halves import store_f16
from .kquants import GROUP_MAX_EPS
from .simd import dot4_s8, f16_at, fmadd_i, fzero, hsum, load_nibbles, load_u8x32, lookup16, store_scaled

BLOCK_SIZE, TYPE_SIZE, ACTIVATION = 32, 18, "q8_0"
KVALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int8)
KVALUES_X2 = np.concatenate([KVALUES, KVALUES])  # the table as lookup16 wants it


@njit(cache=True, fastmath=False)
def dequantize_row(w, y):
    table = load_u8x32(KVALUES_X2, 0)
    for b in range(w.shape[0] // TYPE_SIZE):
        o = b * TYPE_SIZE
        d = f16_at(w, o)
        store_scaled(y, 32 * b, lookup16(table, load_nibbles(w, o + 2)), d, np.float32(0), d, np.float32(0))

@njit(cache=True, fastmath=False)
def dot_row(w, x, xq, xd, xs):
    table = load_u8x32(KVALUES_X2, 0)
    acc = fzero()
    for b in range(w.shape[0] // TYPE_SIZE):
        o = b * TYPE_SIZE
        v = lookup16(table, load_nibbles(w, o + 2))
        acc = fmadd_i(acc, dot4_s8(v, xq, 32 * b), f16_at(w, o) * xd[b])
    return hsum(acc)


@njit(cache=True, fastmath=False)
def best_index(v):
    """Index of the table entry nearest to v (best_index_int8)."""
    if v <= KVALUES[0]:
        return 0
    if v >= KVALUES[15]:
        return 15
    lo, hi = 0, 15
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if v < KVALUES[mid]:
            hi = mid
        else:
            lo = mid
    return hi - 1 if v - np.float32(KVALUES[hi - 1]) < np.float32(KVALUES[hi]) - v else hi


@njit(cache=True, fastmath=False)
def _search_scale(xb, o, weight, L):
    """Scale of one group of 32 (x^2 weights, 7 tries each side); fills L[o:o+32] with table indices."""
    f32 = np.float32
    amax = f32(0)
    vmax = f32(0)
    for j in range(32):
        if abs(xb[o + j]) > amax:
            amax = abs(xb[o + j])
            vmax = xb[o + j]
    if amax < GROUP_MAX_EPS:
        return f32(0)
    for j in range(32):
        weight[j] = xb[o + j] * xb[o + j]
    d = -vmax / f32(KVALUES[0])
    inv = f32(1) / d
    sumqx = f32(0)
    sumq2 = f32(0)
    for j in range(32):
        li = best_index(inv * xb[o + j])
        L[o + j] = li
        q = f32(KVALUES[li])
        sumqx += weight[j] * q * xb[o + j]
        sumq2 += weight[j] * q * q
    d = sumqx / sumq2
    best = d * sumqx
    for itry in range(-7, 8):
        inv = f32(itry + KVALUES[0]) / vmax
        sumqx = f32(0)
        sumq2 = f32(0)
        for j in range(32):
            q = f32(KVALUES[best_index(inv * xb[o + j])])
            sumqx += weight[j] * q * xb[o + j]
            sumq2 += weight[j] * q * q
        if sumq2 > 0 and sumqx * sumqx > best * sumq2:
            d = sumqx / sumq2
            best = d * sumqx
    return d


@njit(cache=True, fastmath=False)
def quantize_groups(xb, w, o, n_groups, qs_off, scales, weight, L):
    """quantize_row_iq4_nl_impl without imatrix (ntry 7) for one block of n_groups groups of 32 values.

    One group (IQ4_NL): the scale itself is the half at w[o]. Several (IQ4_XS): a half super-scale at w[o],
    6-bit group scales packed at w[o+2:o+4] (high 2 bits) and w[o+4:...] (low 4 bits).
    """
    f32 = np.float32
    max_scale = f32(0)
    amax_scale = f32(0)
    for ib in range(n_groups):
        scales[ib] = _search_scale(xb, 32 * ib, weight, L)
        if abs(scales[ib]) > amax_scale:
            amax_scale = abs(scales[ib])
            max_scale = scales[ib]
    if n_groups > 1:
        d = -max_scale / f32(32)
        store_f16(w, o, d)
        inv = f32(1) / d if d != 0 else f32(0)
        scales_h = 0
        for ib in range(n_groups):
            lv = max(-32, min(31, nearest_int(inv * scales[ib])))
            dl = d * f32(lv)
            idl = f32(1) / dl if dl != 0 else f32(0)
            for j in range(32):
                L[32 * ib + j] = best_index(idl * xb[32 * ib + j])
            lv += 32
            if ib % 2 == 0:
                w[o + 4 + ib // 2] = lv & 15
            else:
                w[o + 4 + ib // 2] |= (lv & 15) << 4
            scales_h |= (lv >> 4) << (2 * ib)
        w[o + 2] = scales_h & 255
        w[o + 3] = scales_h >> 8
    else:
        store_f16(w, o, scales[0])
        inv = f32(1) / scales[0] if scales[0] != 0 else f32(0)
        for j in range(32):
            L[j] = best_index(inv * xb[j])
    for g in range(n_groups):
        for j in range(16):
            w[qs_off + 16 * g + j] = L[32 * g + j] | (L[32 * g + 16 + j] << 4)


@njit(cache=True, fastmath=False)
def quantize_rows(x, out):
    L = np.zeros(32, np.uint8)
    weight = np.zeros(32, np.float32)
    scales = np.zeros(1, np.float32)
    for r in range(x.shape[0]):
        for b in range(x.shape[1] // 32):
            quantize_groups(x[r, 32 * b:32 * (b + 1)], out[r], TYPE_SIZE * b, 1, TYPE_SIZE * b + 2, scales, weight, L)
