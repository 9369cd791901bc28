"""The forward pass's non-matmul operations: RMSNorm, RoPE, SwiGLU, attention over the KV cache.

Each is one compiled call on whole activations so a decode step makes few Python→numba transitions.
Reductions accumulate in float64 where llama.cpp does (RMSNorm) and float32 elsewhere.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from . import quants as _quants  # noqa: F401  (sets NUMBA_CACHE_DIR before the first compile)

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
                freq_factors: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin of θ[t, i] = pos[t] · freq_scale · base^(−2i/n_rot) / factor[i].   Each (T, n_rot/2) float32."""
    inv_freq = base ** (-np.arange(0, n_rot, 2, dtype=np.float64) / n_rot)
    if freq_factors is not None:
        inv_freq = inv_freq / freq_factors.astype(np.float64)
    theta = np.outer(np.asarray(positions, dtype=np.float64) * freq_scale, inv_freq)
    return np.cos(theta).astype(np.float32), np.sin(theta).astype(np.float32)


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
def swiglu(gate, up, out):
    """out = silu(gate) · up, elementwise.   All (T, F)."""
    g = gate.ravel()
    u = up.ravel()
    o = out.ravel()
    for i in range(g.shape[0]):
        o[i] = g[i] / (np.float32(1.0) + np.exp(-g[i])) * u[i]
    return out


@nb.njit(parallel=True, **_JIT)
def attend_one(q, k_cache, v_cache, n_ctx_used, scale, scores, out):
    """Attention of one query token over the first n_ctx_used cached positions.

    q: (H, hd)   k_cache, v_cache: (H_kv, n_ctx, hd)   scores: (H, n_ctx) scratch   out: (H, hd)
    """
    n_head, hd = q.shape
    group = n_head // k_cache.shape[0]
    for h in nb.prange(n_head):
        kv = h // group
        best = np.float32(-np.inf)
        for t in range(n_ctx_used):
            s = np.float32(0.0)
            for i in range(hd):
                s += q[h, i] * k_cache[kv, t, i]
            s *= scale
            scores[h, t] = s
            best = max(best, s)
        total = np.float32(0.0)
        for t in range(n_ctx_used):
            e = np.exp(scores[h, t] - best)
            scores[h, t] = e
            total += e
        for i in range(hd):
            out[h, i] = 0.0
        for t in range(n_ctx_used):
            w = scores[h, t] / total
            for i in range(hd):
                out[h, i] += w * v_cache[kv, t, i]
    return out


def attend_many(q: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, start: int, scale: float) -> np.ndarray:
    """Causal attention of T query tokens at positions start..start+T-1 over the cache, through BLAS.

    q: (T, H, hd)   k_cache, v_cache: (H_kv, n_ctx, hd) holding positions 0..start+T-1   → (T, H, hd)
    """
    n_tok, n_head, hd = q.shape
    n_kv = k_cache.shape[0]
    group = n_head // n_kv
    n_keys = start + n_tok
    # key s is visible to query t when s <= start + t
    masked = np.arange(n_keys)[None, :] > (start + np.arange(n_tok))[:, None]  # (T, S)
    out = np.empty_like(q)
    for kv in range(n_kv):
        qg = q[:, kv * group:(kv + 1) * group, :].transpose(1, 0, 2)  # (G, T, hd)
        scores = (qg @ k_cache[kv, :n_keys].T) * np.float32(scale)  # (G, T, S)
        scores[:, masked] = -np.inf
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        out[:, kv * group:(kv + 1) * group, :] = (scores @ v_cache[kv, :n_keys]).transpose(1, 0, 2)
    return out
