"""The generic drivers: one compiled kernel per job for every type, dispatching on the ggml type id per row.

numba cannot cache a kernel that takes another jitted function as an argument, so the per-row functions are
selected by an explicit switch here (one branch per entry of registry.QTYPES). The switch runs once per
row, next to thousands of multiply-adds, and keeps the compiled kernels few: cold compile of everything
and warm-cache loading are both cheaper than one driver per type.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import floats, iq4_nl, iq4_xs, q2_k, q3_k, q4_0, q4_1, q4_k, q5_0, q5_1, q5_k, q6_k, q8_0
from .activation import quantize_q8_0, quantize_q8_k
from .registry import (ACT_Q8_0, ACT_Q8_K, BF16, F16, F32, IQ4_NL, IQ4_XS, Q2_K, Q3_K, Q4_0, Q4_1, Q4_K,
                       Q5_0, Q5_1, Q5_K, Q6_K, Q8_0)


@njit(cache=True)
def activation_kind(code):
    if code == Q4_0 or code == Q4_1 or code == Q5_0 or code == Q5_1 or code == Q8_0 or code == IQ4_NL:
        return ACT_Q8_0
    if code == Q2_K or code == Q3_K or code == Q4_K or code == Q5_K or code == Q6_K or code == IQ4_XS:
        return ACT_Q8_K
    return 0


@njit(cache=True)
def dot_row(code, w, x, xq, xd, xs):
    """w (one weight row as bytes) . x, through the type's kernel; xq/xd/xs are x quantized (activation.py)."""
    if code == Q4_0:
        return q4_0.dot_row(w, x, xq, xd, xs)
    if code == Q4_1:
        return q4_1.dot_row(w, x, xq, xd, xs)
    if code == Q5_0:
        return q5_0.dot_row(w, x, xq, xd, xs)
    if code == Q5_1:
        return q5_1.dot_row(w, x, xq, xd, xs)
    if code == Q8_0:
        return q8_0.dot_row(w, x, xq, xd, xs)
    if code == Q2_K:
        return q2_k.dot_row(w, x, xq, xd, xs)
    if code == Q3_K:
        return q3_k.dot_row(w, x, xq, xd, xs)
    if code == Q4_K:
        return q4_k.dot_row(w, x, xq, xd, xs)
    if code == Q5_K:
        return q5_k.dot_row(w, x, xq, xd, xs)
    if code == Q6_K:
        return q6_k.dot_row(w, x, xq, xd, xs)
    if code == IQ4_NL:
        return iq4_nl.dot_row(w, x, xq, xd, xs)
    if code == IQ4_XS:
        return iq4_xs.dot_row(w, x, xq, xd, xs)
    if code == F32:
        return floats.dot_row_f32(w, x, xq, xd, xs)
    if code == F16:
        return floats.dot_row_f16(w, x, xq, xd, xs)
    if code == BF16:
        return floats.dot_row_bf16(w, x, xq, xd, xs)
    return np.float32(np.nan)


@njit(cache=True)
def dequantize_row(code, w, y):
    """One row of raw bytes -> float32, exactly as gguf-py / ggml dequantize it."""
    if code == Q4_0:
        q4_0.dequantize_row(w, y)
    elif code == Q4_1:
        q4_1.dequantize_row(w, y)
    elif code == Q5_0:
        q5_0.dequantize_row(w, y)
    elif code == Q5_1:
        q5_1.dequantize_row(w, y)
    elif code == Q8_0:
        q8_0.dequantize_row(w, y)
    elif code == Q2_K:
        q2_k.dequantize_row(w, y)
    elif code == Q3_K:
        q3_k.dequantize_row(w, y)
    elif code == Q4_K:
        q4_k.dequantize_row(w, y)
    elif code == Q5_K:
        q5_k.dequantize_row(w, y)
    elif code == Q6_K:
        q6_k.dequantize_row(w, y)
    elif code == IQ4_NL:
        iq4_nl.dequantize_row(w, y)
    elif code == IQ4_XS:
        iq4_xs.dequantize_row(w, y)
    elif code == F32:
        floats.dequantize_row_f32(w, y)
    elif code == F16:
        floats.dequantize_row_f16(w, y)
    elif code == BF16:
        floats.dequantize_row_bf16(w, y)


@njit(cache=True)
def quantize_activations(code, X, xq, xd, xs):
    kind = activation_kind(code)
    for t in range(X.shape[0]):
        if kind == ACT_Q8_0:
            quantize_q8_0(X[t], xq[t], xd[t], xs[t])
        elif kind == ACT_Q8_K:
            quantize_q8_k(X[t], xq[t], xd[t], xs[t])


@njit(parallel=True, cache=True)
def matmul_rows(code, W, X, xq, xd, xs, out):
    """out[t, r] = W[r] . X[t] for all rows r (in parallel) and tokens t; a row is read once for all tokens.

    X float32 (T, K); xq int8 (T, K), xd float32 (T, K/32), xs int32 (T, K/16) are scratch it fills.
    """
    quantize_activations(code, X, xq, xd, xs)
    for r in prange(W.shape[0]):
        w = W[r]
        for t in range(X.shape[0]):
            out[t, r] = dot_row(code, w, X[t], xq[t], xd[t], xs[t])


@njit(parallel=True, cache=True)
def dequantize_rows(code, W, ids, out):
    """out[i] = dequantized W[ids[i]], rows in parallel."""
    for i in prange(ids.shape[0]):
        dequantize_row(code, W[ids[i]], out[i])
