"""The forward pass's elementwise operations: RMSNorm, RoPE, SwiGLU/GeGLU, soft-caps (attention: attention.py).

Each is one compiled call on whole activations so a decode step makes few Python→numba transitions.
Reductions accumulate in float64 where llama.cpp does (RMSNorm) and float32 elsewhere.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from . import quants as _quants  # noqa: F401  (sets NUMBA_CACHE_DIR before the first compile)
from .quants.halves import round_to_f16

_JIT = dict(cache=True, fastmath=True, nogil=True)


@nb.njit(**_JIT)
def rms_norm(x, weight, eps, out):
    """out[t] = x[t] / sqrt(mean(x[t]²) + eps) * weight.   x, out: (T, D); weight: (D,)"""
    n, d = x.shape
    for t in range(n):
        ss = 0.0
        for i in range(d):
            ss += np.float64(x[t, i]) * x[t, i]
        scale = np.float32(1.0 / math.sqrt(ss / d + eps))
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
                x[t, h, a] = x0 * cos[t, i] - x1 * sin[t, i]
                x[t, h, b] = x0 * sin[t, i] + x1 * cos[t, i]
    return x


@nb.njit(**_JIT)
def silu_mul(g, u):
    """silu(g) · u for one value."""
    return g / (np.float32(1.0) + np.exp(-g)) * u


@nb.njit(**_JIT)
def gelu_mul(g, u):
    """gelu(g) · u for one value, with the tanh-approximated GELU as llama.cpp's CPU backend computes it:
    through its half-precision table, i.e. the input and the result rounded to f16 (identity above 10, zero
    below -10)."""
    if g <= -10.0:
        y = np.float32(0.0)
    elif g >= 10.0:
        y = g
    else:
        c = np.float32(math.sqrt(2.0 / math.pi))
        x = round_to_f16(g)
        y = round_to_f16(np.float32(0.5) * x * (np.float32(1.0) + np.tanh(c * x * (np.float32(1.0) + np.float32(0.044715) * x * x))))
    return y * u


@nb.njit(**_JIT)
def swiglu(gate, up, out):
    """out = silu(gate) · up, elementwise.   All (T, F)."""
    g = gate.ravel()
    u = up.ravel()
    o = out.ravel()
    for i in range(g.shape[0]):
        o[i] = silu_mul(g[i], u[i])
    return out


@nb.njit(**_JIT)
def geglu(gate, up, out):
    """out = gelu(gate) · up, elementwise (gelu_mul).   All (T, F)"""
    g = gate.ravel()
    u = up.ravel()
    o = out.ravel()
    for i in range(g.shape[0]):
        o[i] = gelu_mul(g[i], u[i])
    return out


@nb.njit(**_JIT)
def softcap(x, cap):
    """x = cap · tanh(x / cap) in place (gemma2's logit soft-cap).   x: any shape"""
    flat = x.ravel()
    inv = np.float32(1.0) / cap
    for i in range(flat.shape[0]):
        flat[i] = cap * np.tanh(flat[i] * inv)
    return x
