"""The forward pass's elementwise operations: RMSNorm, RoPE, SwiGLU/GeGLU, soft-caps (attention: attention.py).

Each is one compiled call on whole activations so a decode step makes few Python→numba transitions.
Reductions accumulate in float64 where llama.cpp does (RMSNorm) and float32 elsewhere.
"""

from __future__ import annotations

import functools
import math

import numba as nb
import numpy as np

from . import quants as _quants  # noqa: F401  (sets NUMBA_CACHE_DIR before the first compile)
from numba import prange

from .quants.halves import f16_bits_to_f32, f32_to_f16_bits, round_to_f16
from .quants.simd import f32_bits, f32_from_bits, fma32

# No fast-math: these kernels also run inlined into fused.py's decode kernel, and with fast-math LLVM may
# reassociate or contract them differently there than in a call of their own, which broke the fused path's
# bit-identity with the layer-by-layer one. Where ggml's compiled code fuses a multiply-add, fma32 says so.
_JIT = dict(cache=True, fastmath=False, nogil=True, error_model="numpy")


@nb.njit(**_JIT)
def rms_norm(x, weight, eps, out):
    """out[t] = x[t] / sqrt(mean(x[t]²) + eps) * weight.   x, out: (T, D); weight: (D,)

    Exactly as ggml's CPU backend computes it: float32 squares summed in float64 in order (ggml's loop does not
    vectorise: reassociating it would change bits), the mean and the scale in float32.
    """
    n, d = x.shape
    eps32 = np.float32(eps)
    for t in range(n):
        ss = 0.0
        for i in range(d):
            ss += np.float64(x[t, i] * x[t, i])
        mean = np.float32(ss / d)
        scale = np.float32(1.0) / np.sqrt(mean + eps32)
        for i in range(d):
            out[t, i] = x[t, i] * scale * weight[i]
    return out


def rope_tables(positions: np.ndarray, n_rot: int, base: float, freq_scale: float,
                freq_factors: np.ndarray | None = None, orig_ctx: int = 0,
                yarn: tuple[float, float, float, float] | None = None,
                attn_factor: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin of θ[t, i] = pos[t] · freq_scale · base^(−2i/n_rot) / factor[i], times attn_factor (the file's
    rope.scaling.attn_factor, as ggml's rope scales them).   Each (T, n_rot/2) float32.

    yarn = (ext_factor, attn_factor, beta_fast, beta_slow) applies YaRN as ggml does: dims rotating fewer
    than beta_slow times over the original context (orig_ctx positions) take the interpolated angle, dims rotating more than beta_fast times the unscaled one, a linear
    ramp between (times ext_factor); cos, sin are scaled by attn_factor · (1 + 0.1 ln(1 / freq_scale)).
    """
    inv_freq = base ** (-np.arange(0, n_rot, 2, dtype=np.float64) / n_rot)
    if freq_factors is not None:
        inv_freq = inv_freq / freq_factors.astype(np.float64)
    extrapolated = np.outer(np.asarray(positions, dtype=np.float64), inv_freq)
    theta, mscale = extrapolated * freq_scale, attn_factor
    if yarn is not None and yarn[0] != 0.0:
        ext_factor, yarn_attn_factor, beta_fast, beta_slow = yarn

        def corr_dim(n_turns: float) -> float:  # the dim that turns n_turns times over the original context
            return n_rot * math.log(orig_ctx / (n_turns * 2 * math.pi)) / (2 * math.log(base))
        low = max(0.0, math.floor(corr_dim(beta_fast)))
        high = min(n_rot - 1.0, math.ceil(corr_dim(beta_slow)))
        ramp = (1 - np.clip((np.arange(n_rot // 2) - low) / max(0.001, high - low), 0, 1)) * ext_factor
        theta = theta * (1 - ramp) + extrapolated * ramp  # ramp 1: extrapolate (the unscaled angle)
        mscale *= yarn_attn_factor * (1.0 + 0.1 * math.log(1.0 / freq_scale))
    return (np.cos(theta) * mscale).astype(np.float32), (np.sin(theta) * mscale).astype(np.float32)


@nb.njit(**_JIT)
def rope(x, cos, sin, neox):
    """Rotate the first 2·cos.shape[1] dims of every head in place.   x: (T, H, hd); cos, sin: (T, n_rot/2)

    neox pairs dim i with i + n_rot/2 (HF layout, qwen2); otherwise dims 2i and 2i+1 (llama in GGUF).
    """
    n_tok, n_head, _ = x.shape
    half = cos.shape[1]
    for t in range(n_tok):
        for h in range(n_head):
            for i in range(half):
                a = i if neox else 2 * i
                b = i + half if neox else 2 * i + 1
                x0 = x[t, h, a]
                x1 = x[t, h, b]
                # the multiply-adds as LLVM contracted them under fast-math (closest to llama.cpp: Gemma-3's
                # top-1 agreement 95/96 against 93/96 unfused)
                x[t, h, a] = fma32(x0, cos[t, i], -(x1 * sin[t, i]))
                x[t, h, b] = fma32(x1, cos[t, i], x0 * sin[t, i])
    return x


# ggml's vector expf constants (hex floats as written there): log2(e); ln 2 split in a high and a low part;
# the polynomial's coefficients for e^b - 1, highest degree first
_LOG2E = np.float32(float.fromhex("0x1.715476p+0"))
_LN2_HI, _LN2_LO = np.float32(float.fromhex("0x1.62e4p-1")), np.float32(float.fromhex("0x1.7f7d1cp-20"))
_P5, _P4, _P3, _P2, _P1 = (np.float32(float.fromhex(h)) for h in (
    "0x1.0e4020p-7", "0x1.573e2ep-5", "0x1.555e66p-3", "0x1.fffdb6p-2", "0x1.ffffecp-1"))
_SHIFT = np.float32(float.fromhex("0x1.8p23"))  # adding it rounds x·log2(e) to an integer n in z's low bits


@nb.njit(**_JIT)
def exp_f32(x):
    """e^x as ggml's vector expf computes it, one lane at a time (the Arm optimized-routines algorithm:
    x = n·ln2 + b, a degree-5 polynomial in b, n added to the exponent bits; max error 1.45 ulp + 0.5, +inf
    above ~88.38, 0 below ~-103.97). llama.cpp's SiLU and softmax go through it, and unlike a libm call
    LLVM vectorises the loops that call this."""
    z = fma32(x, _LOG2E, _SHIFT)
    n = z - _SHIFT
    b = fma32(-n, _LN2_LO, fma32(-n, _LN2_HI, x))  # x - n·ln2, in [-ln2/2, ln2/2]
    e = f32_bits(z) << np.uint32(23)
    k = f32_from_bits(e + np.uint32(0x3F800000))  # 2^n, for |n| <= 126
    u = b * b
    j = fma32(fma32(fma32(_P5, b, _P4), u, fma32(_P3, b, _P2)), u, _P1 * b)  # e^b - 1
    # |n| > 126: 2^n as two factors (a subnormal or an infinite result); |n| > 192: beyond any float.
    # Both results are computed and one selected (no branch), so loops over exp_f32 vectorise. The lanes
    # that do not take the extreme result compute it from 1s: from their own n, s1·s1 underflows wherever
    # n <= 0, and every underflow costs a microcode assist on Intel cores (SiLU of Qwen2.5-1.5B's (256, 8960)
    # gate values at 1 thread, 2026-12-03, Xeon VM: 8.7 -> 1.0 ms). The results are the same.
    big = abs(n) > np.float32(126.0)
    g = np.uint32(0x82000000) if n <= np.float32(0.0) else np.uint32(0)
    s1 = f32_from_bits(g + np.uint32(0x7F000000)) if big else np.float32(1.0)
    s2 = f32_from_bits(e - g) if big else np.float32(1.0)
    extreme = s1 * s1 if abs(n) > np.float32(192.0) else fma32(s2, j, s2) * s1
    return extreme if big else fma32(j, k, k)


@nb.njit(**_JIT)
def silu_mul(g, u):
    """silu(g) · u for one value, as llama.cpp's swiglu computes it: g / (1 + exp(-g)) · u, exp by exp_f32."""
    return g / (np.float32(1.0) + exp_f32(-g)) * u


# The gated activations by code (fused.py passes the code into compiled code): out = act(gate) · up
ACTIVATIONS = {"silu": 0, "gelu": 1}
GATED_PARALLEL_MIN = 1 << 15  # values below which gated_rows stays on the calling thread (decode rows)


@nb.njit(**_JIT)
def _gelu_of_half(x):
    """The tanh-approximated GELU of x (a float32 holding a half's value), rounded to f16."""
    c = np.float32(math.sqrt(2.0 / math.pi))
    return round_to_f16(np.float32(0.5) * x * (np.float32(1.0) + np.tanh(c * x * (np.float32(1.0) + np.float32(0.044715) * x * x))))


@nb.njit(**_JIT)
def _gelu_halves():
    table = np.empty(1 << 16, np.float32)  # (65536,) by the input's half bits
    for h in range(1 << 16):
        table[h] = _gelu_of_half(f16_bits_to_f32(np.uint16(h)))
    return table


_NO_TABLE = np.zeros(0, np.float32)
_NO_TABLE.flags.writeable = False  # the table's numba type (read-only), so SiLU models share the compiled code


def table_for(name: str) -> np.ndarray:
    """What gated()'s table argument must be for activation `name`: gelu_table(), or an empty one (SiLU)."""
    return gelu_table() if name == "gelu" else _NO_TABLE


@functools.cache
def gelu_table() -> np.ndarray:
    """GELU of every half value, as gelu_mul reads it: llama.cpp's CPU backend computes GELU through such a
    table (the input rounded to f16, the result stored as f16), so a lookup is exact, and ~10x cheaper than
    tanh (Gemma-3's prefill spent 46 % of its time in GeGLU before)."""
    table = _gelu_halves()
    table.flags.writeable = False
    return table


@nb.njit(**_JIT)
def gelu_mul(g, u, table):
    """gelu(g) · u for one value, with the tanh-approximated GELU as llama.cpp's CPU backend computes it:
    through its half-precision table (gelu_table()), i.e. the input and the result rounded to f16 (identity
    above 10, zero below -10)."""
    if g <= -10.0:
        y = np.float32(0.0)
    elif g >= 10.0:
        y = g
    else:
        y = table[f32_to_f16_bits(g)]
    return y * u


GATED_CHUNK = 64  # values gated() computes at a time into a buffer of its own


@nb.njit(**_JIT)
def gated(act, gate, up, out, c0, c1, table):
    """out[:, c0:c1] = act(gate) · up value by value, act 0 SiLU, 1 GELU (table: gelu_table()): the one
    definition the layer-by-layer path (gated_rows) and each thread of fused.py use.   All (T, F)

    The values go through a private buffer GATED_CHUNK at a time, so the SiLU loop vectorises even where out
    is gate itself (model.py's in-place call): LLVM cannot tell that overlapping rows are safe and takes its
    scalar loop then (Qwen2.5-1.5B's (256, 8960) at 1 thread, 2026-12-03: 7.5 ms in place, 1.4 ms apart)."""
    buf = np.empty(GATED_CHUNK, np.float32)
    for t in range(gate.shape[0]):
        for i0 in range(c0, c1, GATED_CHUNK):
            n = min(c1 - i0, GATED_CHUNK)
            g, u = gate[t, i0:i0 + n], up[t, i0:i0 + n]
            if act == 0:  # (one loop per activation, over 0..n: the SiLU one vectorises)
                for i in range(n):
                    buf[i] = silu_mul(g[i], u[i])
            else:
                for i in range(n):
                    buf[i] = gelu_mul(g[i], u[i], table)
            o = out[t, i0:i0 + n]
            for i in range(n):
                o[i] = buf[i]


@nb.njit(parallel=True, **_JIT)
def gated_rows(act, gate, up, out, table):
    """gated() over whole (T, F) activations, rows split over the threads (prefill); returns out."""
    n, f = gate.shape
    if n * f < GATED_PARALLEL_MIN:
        gated(act, gate, up, out, 0, f, table)
        return out
    for t in prange(n):
        gated(act, gate[t:t + 1], up[t:t + 1], out[t:t + 1], 0, f, table)
    return out


def gated_activation(name: str):
    """The model's gated activation as a function (gate, up, out) -> out, for the layer-by-layer path."""
    code, table = ACTIVATIONS[name], table_for(name)
    return lambda gate, up, out: gated_rows(code, gate, up, out, table)


@nb.njit(**_JIT)
def softcap(x, cap):
    """x = cap · tanh(x / cap) in place (gemma2's logit soft-cap).   x: any shape"""
    flat = x.ravel()
    inv = np.float32(1.0) / cap
    for i in range(flat.shape[0]):
        flat[i] = cap * np.tanh(flat[i] * inv)
    return x
