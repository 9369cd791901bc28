"""The generic drivers, specialised per type: one source per job, one compiled kernel per (job, type).

numba cannot cache a kernel that takes another jitted function as an argument, so the per-row functions are
chosen by an explicit switch on the ggml type id (one branch per entry of registry.QTYPES). The drivers are
compiled with the type id as a compile-time literal (`Specialized`): numba prunes the other branches, so each
type's kernel holds only its own inlined row function (as fast as a hand-written driver; a run-time switch
inlines all of them into one body and costs ~30% in register allocation), compiles only when that type is
first used, and is cached on disk per type.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange, types

from . import floats, iq4_nl, iq4_xs, q2_k, q3_k, q4_0, q4_1, q4_k, q5_0, q5_1, q5_k, q6_k, q8_0
from .activation import quantize_q8_0, quantize_q8_k
from .registry import (ACT_Q8_0, ACT_Q8_K, BF16, F16, F32, IQ4_NL, IQ4_XS, Q2_K, Q3_K, Q4_0, Q4_1, Q4_K,
                       Q5_0, Q5_1, Q5_K, Q6_K, Q8_0)


ROW_BLOCK_BYTES = 1 << 16     # weight bytes per parallel task: fits L2 beside the activations
PARALLEL_MIN_BYTES = 1 << 18  # below this (weight bytes x tokens) a call runs on one thread


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


@njit(cache=True)
def _dot_rows(code, W, X, xq, xd, xs, out, r0, r1):
    for t in range(X.shape[0]):
        for r in range(r0, r1):
            out[t, r] = dot_row(code, W[r], X[t], xq[t], xd[t], xs[t])


@njit(parallel=True, cache=True)
def _matmul_rows(code, W, X, xq, xd, xs, out):
    """out[t, r] = W[r] . X[t] for all rows r and tokens t, blocks of rows in parallel.

    X float32 (T, K); xq int8 (T, K), xd float32 (T, K/32), xs int16 (T, K/16) are scratch it fills.
    A block of rows (~64 KB) stays in L2 while every token's activation passes over it from L1, so
    each weight byte comes from memory once per call whatever T is. Small jobs stay on the calling
    thread: waking the others costs more than they would save.
    """
    quantize_activations(code, X, xq, xd, xs)
    if W.size * X.shape[0] < PARALLEL_MIN_BYTES:
        _dot_rows(code, W, X, xq, xd, xs, out, 0, W.shape[0])
        return
    rows_per_block = max(1, ROW_BLOCK_BYTES // W.shape[1])
    n_blocks = (W.shape[0] + rows_per_block - 1) // rows_per_block
    for blk in prange(n_blocks):
        r0 = blk * rows_per_block
        _dot_rows(code, W, X, xq, xd, xs, out, r0, min(W.shape[0], r0 + rows_per_block))


@njit(parallel=True, cache=True)
def _dequantize_rows(code, W, ids, out):
    """out[i] = dequantized W[ids[i]], rows in parallel (unless there are few)."""
    if ids.shape[0] * W.shape[1] < PARALLEL_MIN_BYTES:
        for i in range(ids.shape[0]):
            dequantize_row(code, W[ids[i]], out[i])
        return
    for i in prange(ids.shape[0]):
        dequantize_row(code, W[ids[i]], out[i])


@njit(cache=True)
def _dequantize_row_range(code, W, start, out):
    """out[i] = dequantized W[start + i], on the calling thread (between BLAS calls, whose threads own the
    cores: waking numba's threads there makes both pools fight over them)."""
    for i in range(out.shape[0]):
        dequantize_row(code, W[start + i], out[i])


class Specialized:
    """Calls a driver compiled for a literal type id, skipping numba's per-call type dispatch.

    The first call for a given type id and argument types compiles (or loads from the disk cache) that
    specialisation through numba's public `compile`; later calls go straight to its entry point. Arguments
    are keyed by dtype, ndim, layout, alignment and writability, which is all a compiled signature depends
    on, so a mismatched array can never reach compiled code.
    """

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        self._entries: dict[tuple, object] = {}

    @staticmethod
    def _key(code: int, args) -> tuple:
        return (code, *((a.dtype.num, a.ndim, a.flags.c_contiguous, a.flags.aligned, a.flags.writeable)
                        if isinstance(a, np.ndarray) else type(a) for a in args))

    def __call__(self, code: int, *args):
        key = self._key(code, args)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = self.compile(code, *args)
        return entry(code, *args)

    def compile(self, code: int, *args):
        """Compile (or load) the specialisation for this type id and these arguments; returns its entry."""
        sig = (types.literal(code), *(numba.typeof(a) for a in args))
        self.dispatcher.compile(sig)
        return self.dispatcher.overloads[sig].entry_point


matmul_rows = Specialized(_matmul_rows)
dequantize_rows = Specialized(_dequantize_rows)
dequantize_row_range = Specialized(_dequantize_row_range)
