"""Q4_K: super-blocks of 256 = half d, half dmin, 12 bytes of packed 6-bit scales/mins for 8 sub-blocks of 32,
128 bytes of 4-bit q (each 32 bytes: low nibbles = one sub-block, high nibbles = the next);
w = d*sc*q - dmin*m."""

from __future__ import annotations

import numpy as np
from numba import njit

from .blocks import nearest_int
from .halves import store_f16
from .kquants import make_qkx2_quants, pack_scale_min_k4, scale_min_k4, scales_mins_k4
from .simd import (f16_at, fma32, iadd, ihsum2, izero, lane, load_halves, load_i16x16, load_u8x32, madd, madd_v,
                   maddubs, pairs_low, store_scaled, store_transposed, store_transposed4, vand, vshr)

BLOCK_SIZE, TYPE_SIZE, ACTIVATION = 256, 144, "q8_K"


@njit(cache=True, fastmath=False)
def dequantize_row(w, y):
    for i in range(w.shape[0] // TYPE_SIZE):
        o, yo = i * TYPE_SIZE, i * 256
        d, dmin = f16_at(w, o), f16_at(w, o + 2)
        for j in range(4):
            sc0, m0 = scale_min_k4(2 * j, w, o + 4)
            sc1, m1 = scale_min_k4(2 * j + 1, w, o + 4)
            d0, min0 = d * np.float32(sc0), dmin * np.float32(m0)
            d1, min1 = d * np.float32(sc1), dmin * np.float32(m1)
            q = load_u8x32(w, o + 16 + 32 * j)
            store_scaled(y, yo + 64 * j, vand(q, 15), d0, min0, d0, min0)
            store_scaled(y, yo + 64 * j + 32, vshr(q, 4), d1, min1, d1, min1)


@njit(cache=True, fastmath=False, inline="always")  # see kernels._dot_row: too big for LLVM to inline into the matvec driver
def dot_row(w, x, xq, xd, xs):
    """Per super-block two integer totals, sum_s sc_s*(q.xq)_s and sum_s m_s*bsum_s, then two float steps each
    rounded once: acc += total*(d*dx), acc += mins*(-dmin*dx). One float chain per row in super-block order,
    so the GEMM (kernels._panel_superblocks, one row per lane) gives the same bits. The scales sit in both
    halves of one vector, so each sub-block's scale is one in-lane shuffle (vpshufb)."""
    acc = np.float32(0)
    for i in range(w.shape[0] // TYPE_SIZE):
        o, xo = i * TYPE_SIZE, i * 256
        scales, mins2 = scales_mins_k4(w, o + 4)
        isum = izero()
        for j in range(4):
            q = load_u8x32(w, o + 16 + 32 * j)
            lo = madd(maddubs(vand(q, 15), xq, xo + 64 * j), lane(scales, 2 * j), lane(scales, 2 * j + 8))
            hi = madd(maddubs(vshr(q, 4), xq, xo + 64 * j + 32), lane(scales, 2 * j + 1), lane(scales, 2 * j + 9))
            isum = iadd(isum, iadd(lo, hi))
        total, sums = ihsum2(isum, madd_v(mins2, load_i16x16(xs, 16 * i)))
        dx = xd[i]
        acc = fma32(np.float32(total), f16_at(w, o) * dx, acc)
        acc = fma32(np.float32(sums), -f16_at(w, o + 2) * dx, acc)
    return acc


# The GEMM's interleaved form (kernels._panel_superblocks): one scale per 8 groups of 4 values (a sub-block of
# 32), and the i16 sums of all 8 groups of a sub-block fit before the scale multiplies them (8*2*15*127 < 2^15).
GEMM_SCALE_GROUPS, GEMM_CHUNK_GROUPS = 8, 8


@njit(cache=True, fastmath=False)
def interleave_superblock(flat, rows, o, q, qo, s, so, f, fo):
    """The super-block at byte o of the 8 rows starting at the byte offsets `rows` in the GEMM's interleaved
    form: q[qo + 32g:] = values 4g..4g+3 of each row, row k in 32-bit lane k; s[so + 16j:] = the scale of
    sub-block j and s[so + 128 + 16p:] its min (against the block sums 2p, 2p+1), row k's in lanes 2k, 2k+1;
    f[fo + k] = d and f[fo + 8 + k] = -dmin of row k: what dot_row multiplies, one row per lane."""
    b0, b1, b2, b3, b4, b5, b6, b7 = (rows[0] + o, rows[1] + o, rows[2] + o, rows[3] + o,
                                      rows[4] + o, rows[5] + o, rows[6] + o, rows[7] + o)
    for j in range(4):
        for h in range(2):  # bytes 16h..16h+15 of the chunk: groups 16j + 4h.. (low nibbles), 16j + 8 + 4h.. (high)
            c = 16 + 32 * j + 16 * h
            v0, v1 = load_halves(flat, b0 + c, b4 + c), load_halves(flat, b1 + c, b5 + c)
            v2, v3 = load_halves(flat, b2 + c, b6 + c), load_halves(flat, b3 + c, b7 + c)
            store_transposed4(q, qo + 512 * j + 128 * h, vand(v0, 15), vand(v1, 15), vand(v2, 15), vand(v3, 15))
            store_transposed4(q, qo + 512 * j + 256 + 128 * h, vshr(v0, 4), vshr(v1, 4), vshr(v2, 4), vshr(v3, 4))
    s0, m0 = scales_mins_k4(flat, b0 + 4)
    s1, m1 = scales_mins_k4(flat, b1 + 4)
    s2, m2 = scales_mins_k4(flat, b2 + 4)
    s3, m3 = scales_mins_k4(flat, b3 + 4)
    s4, m4 = scales_mins_k4(flat, b4 + 4)
    s5, m5 = scales_mins_k4(flat, b5 + 4)
    s6, m6 = scales_mins_k4(flat, b6 + 4)
    s7, m7 = scales_mins_k4(flat, b7 + 4)
    store_transposed(s, so, pairs_low(s0), pairs_low(s1), pairs_low(s2), pairs_low(s3),
                     pairs_low(s4), pairs_low(s5), pairs_low(s6), pairs_low(s7))
    store_transposed(s, so + 128, m0, m1, m2, m3, m4, m5, m6, m7)
    for k in range(8):
        f[fo + k] = f16_at(flat, rows[k] + o)
        f[fo + 8 + k] = -f16_at(flat, rows[k] + o + 2)


@njit(cache=True, fastmath=False)
def quantize_rows(x, out):
    """quantize_row_q4_K_ref: per sub-block make_qkx2_quants(nmax 15), then 6-bit scales/mins."""
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
                scales[j], mins[j] = make_qkx2_quants(32, 15, xb, 32 * j, weights, L, Laux, -1.0, 0.1, 20, False)
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
                    L[32 * j + k] = max(0, min(15, nearest_int((xb[32 * j + k] + dm) / dj)))
            for j in range(4):
                for k in range(32):
                    w[o + 16 + 32 * j + k] = L[64 * j + k] | (L[64 * j + 32 + k] << 4)

