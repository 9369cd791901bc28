"""The row kernels of the legacy blocks of 32, one source per family: signed values (Q4_0, Q5_0, Q8_0:
w = d*v) and unsigned values with a min (Q4_1, Q5_1: w = d*q + m). A type supplies its block layout as
TYPE_SIZE and block_weights(w, o) (the block's 32 values as bytes); `row_kernels` compiles the family's
sources against them.

Each type gets its own copy of the functions, whose globals name its block_weights and TYPE_SIZE (numba
freezes both as constants) and whose qualname keeps its cache files apart. A closure over block_weights
would not do: numba keys a cached closure by a pickle of its cells, and a jitted function pickles with an id
new in every process, so the cache would never hit.
"""

from __future__ import annotations

import types

import numpy as np
from numba import njit

from .simd import (dot4, dot4_s8, f16_at, f32_at, fma_f, fma_i, fmul, fzero, hsum, ihsum, lane_fma, load_f16_strided,
                   load_f32x8, load_f32x8_at, store_scaled, sum_lanes8)

TYPE_SIZE = 0          # each type's copy sees its own (row_kernels)
block_weights = None   # likewise
WITH_MIN = False       # likewise
block_dot = None       # likewise: dot4 (unsigned values) or dot4_s8 (signed)


def _dequantize_signed(w, y):
    for b in range(w.shape[0] // TYPE_SIZE):
        o = b * TYPE_SIZE
        d = f16_at(w, o)
        store_scaled(y, 32 * b, block_weights(w, o), d, np.float32(0), d, np.float32(0))


def _dot(w, x, xq, xd, xs):
    """sum_b d_w*d_x*(v.xq) [+ m_w*d_x*sum(xq)]: per block its exact integer dot, then its float steps (each
    rounded once) in lane b % 8 of acc, eight blocks per vector step, then the 8 lanes summed (hsum).

    A step takes blocks b..b+7 (b a multiple of 8), block b + j in lane j: their 8 partial sums become one
    integer each (sum_lanes8), then acc = fma(total, d_w*d_x, acc) and, for the types with a min,
    acc = fma(m_w, d_x*sum(xq), acc). The row's last blocks, fewer than 8, take the same steps one lane at a
    time. The GEMM (kernels._panel_blocks) makes exactly these float steps with one weight row per lane, so its
    results match bit for bit. (Before 2026-12-03 each lane summed a 4-value group of every block in float,
    which the interleaved GEMM could only mirror with a float step per group.)"""
    n = w.shape[0] // TYPE_SIZE
    acc = fzero()
    for b in range(0, n - n % 8, 8):
        o = b * TYPE_SIZE
        totals = sum_lanes8(block_dot(block_weights(w, o), xq, 32 * b),
                            block_dot(block_weights(w, o + TYPE_SIZE), xq, 32 * b + 32),
                            block_dot(block_weights(w, o + 2 * TYPE_SIZE), xq, 32 * b + 64),
                            block_dot(block_weights(w, o + 3 * TYPE_SIZE), xq, 32 * b + 96),
                            block_dot(block_weights(w, o + 4 * TYPE_SIZE), xq, 32 * b + 128),
                            block_dot(block_weights(w, o + 5 * TYPE_SIZE), xq, 32 * b + 160),
                            block_dot(block_weights(w, o + 6 * TYPE_SIZE), xq, 32 * b + 192),
                            block_dot(block_weights(w, o + 7 * TYPE_SIZE), xq, 32 * b + 224))
        acc = fma_i(acc, totals, fmul(load_f16_strided(w, o, TYPE_SIZE), load_f32x8(xd, b)))
        if WITH_MIN:  # xs holds d_x * sum(xq) as a float32 per block (activation.py)
            acc = fma_f(acc, load_f16_strided(w, o + 2, TYPE_SIZE), load_f32x8_at(xs, 2 * b))
    for b in range(n - n % 8, n):  # the last blocks, fewer than 8: one at a time, into lane b % 8 alone
        o = b * TYPE_SIZE
        total = np.float32(ihsum(block_dot(block_weights(w, o), xq, 32 * b)))  # exact: |total| < 2^24
        acc = lane_fma(acc, b % 8, total, f16_at(w, o) * xd[b])
        if WITH_MIN:
            acc = lane_fma(acc, b % 8, f16_at(w, o + 2), f32_at(xs, 2 * b))
    return hsum(acc)


def _dequantize_with_min(w, y):
    for b in range(w.shape[0] // TYPE_SIZE):
        o = b * TYPE_SIZE
        d, m = f16_at(w, o), -f16_at(w, o + 2)
        store_scaled(y, 32 * b, block_weights(w, o), d, m, d, m)


def _compiled(source, name: str, module: str, names: dict, **options):
    fn = types.FunctionType(source.__code__, dict(globals(), **names), name)
    fn.__qualname__ = f"{module.rsplit('.', 1)[-1]}.{name}"
    fn.__module__, fn.__doc__ = module, source.__doc__
    return njit(cache=True, **options)(fn)


def row_kernels(module: str, weights, type_size: int, with_min: bool):
    """(dequantize_row, dot_row) of the type defined in `module` (its __name__), with block_weights `weights`."""
    names = dict(block_weights=weights, TYPE_SIZE=type_size, WITH_MIN=with_min, block_dot=dot4 if with_min else dot4_s8)
    return (_compiled(_dequantize_with_min if with_min else _dequantize_signed, "dequantize_row", module, names),
            _compiled(_dot, "dot_row", module, names, inline="always"))  # too big for LLVM to inline: kernels._dot_row
