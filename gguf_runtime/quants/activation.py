"""Activation quantizers for the integer dot products, as llama.cpp does once per matvec.

Both write the same three arrays for a float32 row x of length K:
  xq int8[K]      the quantized values, in [-127, 127]
  xd float32[]    one scale per block: x ~= xd[b] * xq (block of 32 for Q8_0, 256 for Q8_K)
  xs int16[K/16]  block sums. Q8_K: sums of xq over each 16 values (the `bsums`). Q8_0: the float32 xd[b] *
                  sum(xq of block b) (llama.cpp's Q8_1 `s`), stored bit-for-bit in xs[2b:2b+2] (read with
                  simd.f32_at(xs, 2b)) for the types with a min (Q4_1, Q5_1).
Both follow what llama.cpp's CPU backend runs on x86 (the AVX2 `quantize_row_q8_0`/`q8_1` and
`quantize_row_q8_K_ref`), rounding included: q = round-half-even(x * 127/max|x|) and the Q8_0 scale is
rounded to half as llama.cpp stores it. So the integer kernels see the activation llama.cpp's vec_dot
kernels see, and the tiled matmul multiplies by the same rounded activation (`dequantize_into`). One
deliberate difference: the block sum is kept as the exact d16 * sum(q) (llama.cpp's Q8_1 rounds it to half
too, a 2^-11 difference on the min term of Q4_1/Q5_1), so both matmul strategies multiply the same x_hat.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .halves import round_to_f16


@njit(cache=True, fastmath=False)
def quantize_q8_0(x, xq, xd, xs):
    """Blocks of 32: scale = max|x| / 127 (stored as a half), q = rint(x * 127 / max|x|)."""
    xsf = xs.view(np.float32)
    for b in range(x.shape[0] // 32):
        o = 32 * b
        amax = np.float32(0)
        for j in range(32):
            amax = max(amax, abs(x[o + j]))
        d = amax / np.float32(127)
        inv = np.float32(127) / amax if amax != 0 else np.float32(0)
        s = 0
        for j in range(32):
            q = np.int8(np.rint(x[o + j] * inv))
            xq[o + j] = q
            s += np.int32(q)
        xd[b] = round_to_f16(d)
        xsf[b] = xd[b] * np.float32(s)  # exact: sum(x_hat) of the block


@njit(cache=True, fastmath=False)
def quantize_q8_k(x, xq, xd, xs):
    """Blocks of 256: the value of largest magnitude maps to -127 (llama.cpp's iscale = -127/max)."""
    for b in range(x.shape[0] // 256):
        o = 256 * b
        amax = np.float32(0)
        vmax = np.float32(0)
        for j in range(256):
            a = abs(x[o + j])
            if a > amax:
                amax = a
                vmax = x[o + j]
        if amax == 0:
            xd[b] = 0
            for j in range(256):
                xq[o + j] = 0
        else:
            iscale = np.float32(-127) / vmax
            for j in range(256):
                xq[o + j] = np.int8(min(127, np.rint(iscale * x[o + j])))
            xd[b] = np.float32(1) / iscale
        for g in range(16):
            s = 0
            for j in range(16):
                s += np.int32(xq[o + 16 * g + j])
            xs[16 * b + g] = s


@njit(cache=True, fastmath=False)
def dequantize_into(xq, xd, block, out):
    """out = the activation the integer kernels multiply by: xq * its block scale (xq, xd as written above)."""
    for i in range(xq.shape[0]):
        out[i] = np.float32(xq[i]) * xd[i // block]
