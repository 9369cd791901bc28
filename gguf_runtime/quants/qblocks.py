"""The row kernels of the legacy blocks of 32, one source per family: signed values (Q4_0, Q5_0, Q8_0:
w = d*v) and unsigned values with a min (Q4_1, Q5_1: w = d*q + m). A type supplies its block layout as
TYPE_SIZE and block_weights(w, o) (the block's 32 values as bytes); `row_kernels` compiles the family's
sources against them.

Each type gets its own copy of the functions, whose globals name its block_weights and TYPE_SIZE (numba
freezes both as constants) and whose qualname keeps its cache files apart. A closure over block_weights
would not do: numba keys a cached closure by a pickle of its cells, and a jitted function pickles with an id
new in every process, so the cache would never hit.

The dot products keep ggml's AVX2 vec_dot order for these types: 8 float lanes, each accumulating one 4-value
partial sum of every block times its scale. Exact per-block integer totals with one float step per block
(which would let an 8-row interleaved GEMM add integers before any float work) were tried on 2026-12-03 and
reverted: rounding differently from llama.cpp moved Gemma-3's logit p99 to 1.116 and its perplexity by
1.09 %, past the parity margins, and SmolLM2's top-1 agreement below its floor (commits 15c7b87, 1a17281).
"""

from __future__ import annotations

import types

import numpy as np
from numba import njit

from .simd import dot4, dot4_s8, f16_at, f32_at, fmadd_i, fzero, hsum, store_scaled

TYPE_SIZE = 0          # each type's copy sees its own (row_kernels)
block_weights = None   # likewise


def _dequantize_signed(w, y):
    for b in range(w.shape[0] // TYPE_SIZE):
        o = b * TYPE_SIZE
        d = f16_at(w, o)
        store_scaled(y, 32 * b, block_weights(w, o), d, np.float32(0), d, np.float32(0))


def _dot_signed(w, x, xq, xd, xs):
    """sum_b d_w*d_x*(v.xq), integer dot per block."""
    acc = fzero()
    for b in range(w.shape[0] // TYPE_SIZE):
        o = b * TYPE_SIZE
        acc = fmadd_i(acc, dot4_s8(block_weights(w, o), xq, 32 * b), f16_at(w, o) * xd[b])
    return hsum(acc)


def _dequantize_with_min(w, y):
    for b in range(w.shape[0] // TYPE_SIZE):
        o = b * TYPE_SIZE
        d, m = f16_at(w, o), -f16_at(w, o + 2)
        store_scaled(y, 32 * b, block_weights(w, o), d, m, d, m)


def _dot_with_min(w, x, xq, xd, xs):
    """sum_b d_w*d_x*(q.xq) + m_w*d_x*sum(xq)."""
    acc = fzero()
    mins = np.float32(0)
    for b in range(w.shape[0] // TYPE_SIZE):
        o = b * TYPE_SIZE
        acc = fmadd_i(acc, dot4(block_weights(w, o), xq, 32 * b), f16_at(w, o) * xd[b])
        mins += f16_at(w, o + 2) * f32_at(xs, 2 * b)  # d_x * sum(xq), see activation.py
    return hsum(acc) + mins


def _compiled(source, name: str, module: str, weights, type_size: int):
    fn = types.FunctionType(source.__code__, dict(globals(), block_weights=weights, TYPE_SIZE=type_size), name)
    fn.__qualname__ = f"{module.rsplit('.', 1)[-1]}.{name}"
    fn.__module__, fn.__doc__ = module, source.__doc__
    return njit(cache=True)(fn)


def row_kernels(module: str, weights, type_size: int, with_min: bool):
    """(dequantize_row, dot_row) of the type defined in `module` (its __name__), with block_weights `weights`."""
    dequantize, dot = (_dequantize_with_min, _dot_with_min) if with_min else (_dequantize_signed, _dot_signed)
    return (_compiled(dequantize, "dequantize_row", module, weights, type_size),
            _compiled(dot, "dot_row", module, weights, type_size))
