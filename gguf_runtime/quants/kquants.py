"""Shared pieces of the K-quants (super-blocks of 256): the packed 6-bit scales of Q4_K/Q5_K and the
scale searches of llama.cpp's reference quantizers (make_qkx2_quants, make_qx_quants, make_q3_quants).

The searches follow ggml-quants.c operation for operation in float32 (no fastmath), without an imatrix.
L, Laux are uint8/int8 scratch rows; x, weights are float32; `o` is the offset of the group in x and L.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .blocks import nearest_int
from .simd import u32_at, widen_pairs, widen_u32x4

QK_K = 256
GROUP_MAX_EPS = np.float32(1e-15)


@njit(cache=True, fastmath=False)
def scale_min_k4(j, w, o):
    """Scale and min (6 bits each) of sub-block j (0..7) from the 12 packed bytes at w[o:o+12]."""
    if j < 4:
        return np.int32(w[o + j] & 63), np.int32(w[o + j + 4] & 63)
    sc = np.int32(w[o + j + 4] & 15) | (np.int32(w[o + j - 4] >> 6) << 4)
    m = np.int32(w[o + j + 4] >> 4) | (np.int32(w[o + j] >> 6) << 4)
    return sc, m


@njit(cache=True, fastmath=False)
def scales_mins_k4(w, o):
    """The 8 scales from w[o:o+12] as one I16x16, in lanes 0..7 and again in 8..15, and the mins each twice
    (to pair with per-16 block sums): the same unpacking as scale_min_k4, 4 bytes at a time. Scale j of
    sub-block j is lanes j and 8+j, so `madd(p, lane(s, j), lane(s, 8 + j))` is one in-lane shuffle."""
    a, b, c = u32_at(w, o), u32_at(w, o + 4), u32_at(w, o + 8)
    low6, low4, top2 = np.uint32(0x3F3F3F3F), np.uint32(0x0F0F0F0F), np.uint32(0x03030303)
    scales_hi = (c & low4) | (((a >> np.uint32(6)) & top2) << np.uint32(4))
    mins_hi = ((c >> np.uint32(4)) & low4) | (((b >> np.uint32(6)) & top2) << np.uint32(4))
    return widen_u32x4(a & low6, scales_hi, a & low6, scales_hi), widen_pairs(b & low6, mins_hi)


@njit(cache=True, fastmath=False)
def pack_scale_min_k4(ls, lm, w, o):
    """Inverse of scale_min_k4 for 8 scales ls and mins lm (each 0..63)."""
    for j in range(8):
        if j < 4:
            w[o + j] = ls[j]
            w[o + j + 4] = lm[j]
        else:
            w[o + j + 4] = (ls[j] & 15) | ((lm[j] & 15) << 4)
            w[o + j - 4] |= (ls[j] >> 4) << 6
            w[o + j] |= (lm[j] >> 4) << 6


@njit(cache=True, fastmath=False)
def make_qkx2_quants(n, nmax, x, o, weights, L, Laux, rmin, rdelta, nstep, use_mad):
    """Affine quantization x ~= scale*L - min with L in [0, nmax], searching the scale; returns (scale, min)."""
    f32 = np.float32
    lo = x[o]
    hi = x[o]
    sum_w = weights[0]
    sum_x = sum_w * x[o]
    for i in range(1, n):
        lo = min(lo, x[o + i])
        hi = max(hi, x[o + i])
        w = weights[i]
        sum_w += w
        sum_x += w * x[o + i]
    if lo > 0:
        lo = f32(0)
    if hi == lo:
        for i in range(n):
            L[o + i] = 0
        return f32(0), -lo
    iscale = f32(nmax) / (hi - lo)
    scale = f32(1) / iscale
    best_error = f32(0)
    for i in range(n):
        li = max(0, min(nmax, nearest_int(iscale * (x[o + i] - lo))))
        L[o + i] = li
        diff = scale * f32(li) + lo - x[o + i]
        diff = abs(diff) if use_mad else diff * diff
        best_error += weights[i] * diff
    if nstep < 1:
        return scale, -lo
    for step in range(nstep + 1):
        iscale = (f32(rmin) + f32(rdelta) * f32(step) + f32(nmax)) / (hi - lo)
        sum_l = f32(0)
        sum_l2 = f32(0)
        sum_xl = f32(0)
        for i in range(n):
            li = max(0, min(nmax, nearest_int(iscale * (x[o + i] - lo))))
            Laux[i] = li
            w = weights[i]
            sum_l += w * f32(li)
            sum_l2 += w * f32(li) * f32(li)
            sum_xl += w * f32(li) * x[o + i]
        det = sum_w * sum_l2 - sum_l * sum_l
        if det > 0:
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / det
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det
            if this_min > 0:
                this_min = f32(0)
                this_scale = sum_xl / sum_l2
            cur_error = f32(0)
            for i in range(n):
                diff = this_scale * f32(Laux[i]) + this_min - x[o + i]
                diff = abs(diff) if use_mad else diff * diff
                cur_error += weights[i] * diff
            if cur_error < best_error:
                for i in range(n):
                    L[o + i] = Laux[i]
                best_error = cur_error
                scale = this_scale
                lo = this_min
    return scale, -lo


@njit(cache=True, fastmath=False)
def make_qx_quants(n, nmax, x, o, L):
    """Symmetric quantization L in [0, 2*nmax) (value L - nmax), weighted by x^2 (rmse_type 1); returns scale."""
    f32 = np.float32
    vmax = f32(0)
    amax = f32(0)
    for i in range(n):
        ax = abs(x[o + i])
        if ax > amax:
            amax = ax
            vmax = x[o + i]
    if amax < GROUP_MAX_EPS:
        for i in range(n):
            L[o + i] = 0
        return f32(0)
    iscale = -f32(nmax) / vmax
    sumlx = f32(0)
    suml2 = f32(0)
    for i in range(n):
        li = max(-nmax, min(nmax - 1, nearest_int(iscale * x[o + i])))
        L[o + i] = li + nmax
        w = x[o + i] * x[o + i]
        sumlx += w * x[o + i] * f32(li)
        suml2 += w * f32(li) * f32(li)
    scale = sumlx / suml2 if suml2 != 0 else f32(0)
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        iscale = -(f32(nmax) + f32(0.1) * f32(step)) / vmax
        sumlx = f32(0)
        suml2 = f32(0)
        for i in range(n):
            li = max(-nmax, min(nmax - 1, nearest_int(iscale * x[o + i])))
            w = x[o + i] * x[o + i]
            sumlx += w * x[o + i] * f32(li)
            suml2 += w * f32(li) * f32(li)
        if suml2 > 0 and sumlx * sumlx > best * suml2:
            for i in range(n):
                L[o + i] = nmax + max(-nmax, min(nmax - 1, nearest_int(iscale * x[o + i])))
            scale = sumlx / suml2
            best = scale * sumlx
    return scale


@njit(cache=True, fastmath=False)
def make_q3_quants(n, nmax, x, o, L):
    """Symmetric quantization with a coordinate-descent refinement (do_rmse); L in [0, 2*nmax); returns scale."""
    f32 = np.float32
    vmax = f32(0)
    amax = f32(0)
    for i in range(n):
        ax = abs(x[o + i])
        if ax > amax:
            amax = ax
            vmax = x[o + i]
    if amax < GROUP_MAX_EPS:
        for i in range(n):
            L[o + i] = 0
        return f32(0)
    iscale = -f32(nmax) / vmax
    sumlx = f32(0)
    suml2 = f32(0)
    for i in range(n):
        li = max(-nmax, min(nmax - 1, nearest_int(iscale * x[o + i])))
        L[o + i] = li
        w = x[o + i] * x[o + i]
        sumlx += w * x[o + i] * f32(li)
        suml2 += w * f32(li) * f32(li)
    for _ in range(5):
        n_changed = 0
        for i in range(n):
            xi = x[o + i]
            w = xi * xi
            li = f32(L[o + i])
            slx = sumlx - w * xi * li
            if slx > 0:
                sl2 = suml2 - w * li * li
                new_l = max(-nmax, min(nmax - 1, nearest_int(xi * sl2 / slx)))
                if new_l != L[o + i]:
                    slx += w * xi * f32(new_l)
                    sl2 += w * f32(new_l) * f32(new_l)
                    if sl2 > 0 and slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[o + i] = new_l
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    for i in range(n):
        L[o + i] += nmax
    return sumlx / suml2 if suml2 > 0 else f32(0)
