"""Q6_K: super-blocks of 256 = 128 bytes of low nibbles, 64 bytes of 2-bit high parts, 16 int8 scales (one per
16 values), half d; w = d*sc*(q-32). Per half of 128: element k of each group of 32 takes its nibble from
ql[k] (groups 0, 2: low/high nibble) or ql[32+k] (groups 1, 3) and its high bits from qh[k] >> 2*group."""

from __future__ import annotations

import numpy as np
from numba import njit

from .blocks import nearest_int
from .halves import store_f16
from .kquants import GROUP_MAX_EPS, make_qx_quants
from .simd import (f16_at, fma32, iadd, ihsum2, izero, lane, load_halves, load_i16x16, load_u8x32, madd, madd_v,
                   maddubs, pairs_high, pairs_low, store_scaled, store_transposed, store_transposed4, vand, vor, vshl,
                   vshr, vsub, widen_s8)

BLOCK_SIZE, TYPE_SIZE, ACTIVATION = 256, 210, "q8_K"


@njit(cache=True, fastmath=False)
def _six_bit(ql0, ql1, qh, grp):
    """The 6-bit q (0..63) of group grp (0..3) of a half super-block, from its 64 ql and 32 qh bytes."""
    low = ql0 if grp % 2 == 0 else ql1
    nibble = vand(low, 15) if grp < 2 else vshr(low, 4)
    return vor(nibble, vshl(vand(vshr(qh, 2 * grp), 3), 4))


@njit(cache=True, fastmath=False)
def dequantize_row(w, y):
    for i in range(w.shape[0] // TYPE_SIZE):
        o, yo = i * TYPE_SIZE, i * 256
        d = f16_at(w, o + 208)
        for n in range(2):
            ql0, ql1 = load_u8x32(w, o + 64 * n), load_u8x32(w, o + 64 * n + 32)
            qh = load_u8x32(w, o + 128 + 32 * n)
            for grp in range(4):
                s = o + 192 + 8 * n + 2 * grp
                d0, d1 = d * np.float32(np.int8(w[s])), d * np.float32(np.int8(w[s + 1]))
                q = vsub(_six_bit(ql0, ql1, qh, grp), 32)
                store_scaled(y, yo + 128 * n + 32 * grp, q, d0, np.float32(0), d1, np.float32(0))


@njit(cache=True, fastmath=False)
def dot_row(w, x, xq, xd, xs):
    """Per super-block the integer totals sum_s sc_s*(q.xq)_s and sum_s sc_s*bsum_s (q stays unsigned, 0..63),
    then two float steps each rounded once: acc += total*(d*dx), acc += sums*(-32*d*dx), as the GEMM
    (kernels._panel_superblocks) computes each of its lanes."""
    acc = np.float32(0)
    for i in range(w.shape[0] // TYPE_SIZE):
        o, xo = i * TYPE_SIZE, i * 256
        scales = widen_s8(w, o + 192)
        isum = izero()
        for n in range(2):
            ql0, ql1 = load_u8x32(w, o + 64 * n), load_u8x32(w, o + 64 * n + 32)
            qh = load_u8x32(w, o + 128 + 32 * n)
            for grp in range(4):
                s = 8 * n + 2 * grp
                p = maddubs(_six_bit(ql0, ql1, qh, grp), xq, xo + 128 * n + 32 * grp)
                isum = iadd(isum, madd(p, lane(scales, s), lane(scales, s + 1)))
        total, sums = ihsum2(isum, madd_v(scales, load_i16x16(xs, 16 * i)))
        d, dx = f16_at(w, o + 208), xd[i]
        acc = fma32(np.float32(total), d * dx, acc)
        acc = fma32(np.float32(sums), (np.float32(-32) * d) * dx, acc)
    return acc


# The GEMM's interleaved form (kernels._panel_superblocks): one scale per 4 groups of 4 values (16 values);
# two groups' i16 sums fit before a scale multiplies them (2*2*63*127 < 2^15), four would not.
GEMM_SCALE_GROUPS, GEMM_CHUNK_GROUPS = 4, 2


@njit(cache=True, fastmath=False)
def _six_bits_of(flat, lo, hi, n, grp, h):
    """Bytes 16h..16h+15 of group grp's 6-bit values in half n of two super-blocks (at lo and hi), side by side."""
    c = 64 * n + 16 * h
    return _six_bit(load_halves(flat, lo + c, hi + c), load_halves(flat, lo + c + 32, hi + c + 32),
                    load_halves(flat, lo + 128 + 32 * n + 16 * h, hi + 128 + 32 * n + 16 * h), grp)


@njit(cache=True, fastmath=False)
def interleave_superblock(flat, rows, o, q, qo, s, so, f, fo):
    """The super-block at byte o of the 8 rows starting at the byte offsets `rows` in the GEMM's interleaved
    form: q[qo + 32g:] = values 4g..4g+3 of each row (6-bit, unsigned), row k in 32-bit lane k; s[so + 16j:] =
    scale j (values 16j..16j+15) and s[so + 256 + 16p:] scales 2p, 2p+1 (against the block sums 2p, 2p+1),
    row k's in lanes 2k, 2k+1; f[fo + k] = d and f[fo + 8 + k] = -32*d of row k."""
    b0, b1, b2, b3, b4, b5, b6, b7 = (rows[0] + o, rows[1] + o, rows[2] + o, rows[3] + o,
                                      rows[4] + o, rows[5] + o, rows[6] + o, rows[7] + o)
    for n in range(2):
        for grp in range(4):
            for h in range(2):
                store_transposed4(q, qo + 256 * (4 * n + grp) + 128 * h, _six_bits_of(flat, b0, b4, n, grp, h),
                                  _six_bits_of(flat, b1, b5, n, grp, h), _six_bits_of(flat, b2, b6, n, grp, h),
                                  _six_bits_of(flat, b3, b7, n, grp, h))
    s0, s1, s2, s3 = (widen_s8(flat, b0 + 192), widen_s8(flat, b1 + 192), widen_s8(flat, b2 + 192),
                      widen_s8(flat, b3 + 192))
    s4, s5, s6, s7 = (widen_s8(flat, b4 + 192), widen_s8(flat, b5 + 192), widen_s8(flat, b6 + 192),
                      widen_s8(flat, b7 + 192))
    store_transposed(s, so, pairs_low(s0), pairs_low(s1), pairs_low(s2), pairs_low(s3),
                     pairs_low(s4), pairs_low(s5), pairs_low(s6), pairs_low(s7))
    store_transposed(s, so + 128, pairs_high(s0), pairs_high(s1), pairs_high(s2), pairs_high(s3),
                     pairs_high(s4), pairs_high(s5), pairs_high(s6), pairs_high(s7))
    store_transposed(s, so + 256, s0, s1, s2, s3, s4, s5, s6, s7)
    for k in range(8):
        d = f16_at(flat, rows[k] + o + 208)
        f[fo + k] = d
        f[fo + 8 + k] = np.float32(-32) * d


@njit(cache=True, fastmath=False)
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
