"""Scalar IEEE half <-> float conversions in numba, bit-exact with numpy (round to nearest even)."""

from __future__ import annotations

import numpy as np
from numba import njit

from .simd import f32_bits, f32_from_bits


@njit(cache=True, fastmath=False)
def f32_to_f16_bits(x):
    """float32 -> the bits of the nearest half (ties to even), as numpy's astype(float16) does."""
    b = f32_bits(np.float32(x))
    sign = (b >> np.uint32(16)) & np.uint32(0x8000)
    a = b & np.uint32(0x7FFFFFFF)
    if a >= np.uint32(0x7F800000):  # inf or nan (nan keeps its top payload bits and stays a nan)
        if a == np.uint32(0x7F800000):
            return np.uint16(sign | np.uint32(0x7C00))
        h = np.uint32(0x7C00) + ((a & np.uint32(0x007FFFFF)) >> np.uint32(13))
        if h == np.uint32(0x7C00):
            h += np.uint32(1)
        return np.uint16(sign | h)
    if a >= np.uint32(0x477FF000):  # >= 65520 rounds to infinity
        return np.uint16(sign | np.uint32(0x7C00))
    if a < np.uint32(0x38800000):  # below 2^-14: a subnormal half; scaling by 2^24 is exact, rint ties to even
        m = np.rint(f32_from_bits(a) * np.float32(16777216.0))
        return np.uint16(sign | np.uint32(m))
    rounded = a + np.uint32(0x0FFF) + ((a >> np.uint32(13)) & np.uint32(1))
    return np.uint16(sign | ((rounded >> np.uint32(13)) - np.uint32(0x1C000)))


@njit(cache=True, fastmath=False)
def f16_bits_to_f32(h):
    """Half bits (uint16) -> float32 (exact)."""
    h = np.uint32(h)
    sign = (h & np.uint32(0x8000)) << np.uint32(16)
    e = (h >> np.uint32(10)) & np.uint32(31)
    m = h & np.uint32(0x3FF)
    if e == np.uint32(0):
        v = np.float32(m) * np.float32(2.0 ** -24)
        return f32_from_bits(f32_bits(v) | sign)
    if e == np.uint32(31):
        return f32_from_bits(sign | np.uint32(0x7F800000) | (m << np.uint32(13)))
    return f32_from_bits(sign | ((e + np.uint32(112)) << np.uint32(23)) | (m << np.uint32(13)))


@njit(cache=True, fastmath=False)
def round_to_f16(x):
    """x rounded to the nearest half, as float32 (GGML_FP16_TO_FP32(GGML_FP32_TO_FP16(x)))."""
    return f16_bits_to_f32(f32_to_f16_bits(x))


@njit(cache=True, fastmath=False)
def store_f16(out, off, x):
    """Write x as a little-endian half at out[off:off+2]; returns the stored value as float32."""
    h = f32_to_f16_bits(x)
    out[off] = np.uint8(h & np.uint16(0xFF))
    out[off + 1] = np.uint8(h >> np.uint16(8))
    return f16_bits_to_f32(h)
