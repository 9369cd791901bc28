"""Small numba helpers shared by the block quantizers (legacy and K-quant)."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, fastmath=False)
def signed_absmax(x, o, n):
    """The value of largest magnitude in x[o:o+n] (the first one on ties), as llama.cpp's quantizers pick it."""
    amax = np.float32(0)
    vmax = np.float32(0)
    for j in range(n):
        v = x[o + j]
        if amax < abs(v):
            amax = abs(v)
            vmax = v
    return vmax


@njit(cache=True, fastmath=False)
def min_max(x, o, n):
    lo = np.float32(np.inf)
    hi = np.float32(-np.inf)
    for j in range(n):
        v = x[o + j]
        lo = min(lo, v)
        hi = max(hi, v)
    return lo, hi


@njit(cache=True, fastmath=False)
def inverse(d):
    """1/d, or 0 for d == 0 (the `id` of every legacy quantizer)."""
    return np.float32(1) / d if d != 0 else np.float32(0)


@njit(cache=True, fastmath=False)
def truncate_u8(v, hi):
    """(uint8)v clipped to hi, for the non-negative biased values the legacy quantizers produce."""
    return np.uint8(min(hi, max(0, np.int32(v))))


@njit(cache=True, fastmath=False)
def round_half_away(v):
    """roundf: ties away from zero, exact for float32 (gguf-py's np_roundf)."""
    a = abs(v)
    f = np.floor(a)
    r = f + np.floor(np.float32(2) * (a - f))
    return -r if v < 0 else r


@njit(cache=True, fastmath=False)
def nearest_int(v):
    """llama.cpp's nearest_int: round to nearest, ties to even."""
    return np.int32(np.rint(v))
