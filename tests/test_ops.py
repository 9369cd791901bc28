"""The elementwise kernels (ops.py) compute what ggml's CPU backend computes, in its order and rounding."""

from __future__ import annotations

import numba as nb
import numpy as np

from gguf_runtime.attention import _capped, _dot_f32, _dots4_f32, _softmax, _task
from gguf_runtime.ops import exp_f32, gated, rms_norm, rope


def _ggml_rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """ggml_compute_forward_rms_norm_f32 (+ the fused multiply by the weight), transcribed: float32 squares
    summed in float64 in order; the mean and the scale in float32."""
    out = np.empty_like(x)
    for t in range(x.shape[0]):
        total = 0.0
        for v in x[t]:
            total += float(np.float32(v * v))
        mean = np.float32(total / x.shape[1])
        scale = np.float32(1.0) / np.sqrt(mean + np.float32(eps))
        out[t] = x[t] * scale * w
    return out


def test_rms_norm_is_ggmls_bit_for_bit():
    rng = np.random.default_rng(0)
    # 400 rows: a square rounded in float64 instead of float32 changes the float32 mean of ~2% of rows
    x = (rng.standard_normal((400, 576)) * rng.uniform(0.01, 40, (400, 1))).astype(np.float32)
    w = rng.standard_normal(576).astype(np.float32)
    ours = rms_norm(x, w, 1e-5, np.empty_like(x))
    assert np.array_equal(ours, _ggml_rms_norm(x, w, 1e-5))
    inplace = x.copy()
    rms_norm(inplace, w, 1e-5, inplace)  # out may be x (the fused path norms in place)
    assert np.array_equal(inplace, ours)


@nb.njit(cache=False)
def _exps(x, out):
    for i in range(x.shape[0]):
        out[i] = exp_f32(x[i])


def test_exp_f32_accuracy_and_range():
    # every 61st float32 bit pattern between the ends of its range (~2.3M values, normals and subnormal results)
    x = np.arange(0, 2 ** 32, 1861, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = x[np.isfinite(x) & (x > -110) & (x < 95)]
    got = np.empty_like(x)
    _exps(x, got)
    exact = np.exp(x.astype(np.float64))
    with np.errstate(over="ignore"):
        rounded = exact.astype(np.float32)
    normal = np.isfinite(rounded) & (rounded >= np.finfo(np.float32).tiny)
    ulps = np.abs(got[normal] - exact[normal]) / np.spacing(rounded[normal])
    assert ulps.max() < 1.96, ulps.max()  # ggml's bound: 1.45 ulp plus 0.5 for the rounding
    assert np.isinf(got[x > 88.73]).all() and (got[x < -104] == 0).all()
    tiny = (rounded > 0) & (rounded < np.finfo(np.float32).tiny) & (x > -103)
    assert np.allclose(got[tiny], exact[tiny], rtol=0, atol=2 * 2.0 ** -149)  # subnormal results
    special = np.array([0.0, -0.0, 1.0, -1.0, np.log(2.0)], np.float32)
    _exps(special, out := np.empty_like(special))
    assert out[0] == 1.0 and out[1] == 1.0 and abs(out[2] - np.e) < 3e-7 and abs(out[4] - 2) < 3e-7


def test_silu_divides_by_one_plus_exp():
    """SiLU is g / (1 + exp_f32(-g)) · up, as llama.cpp's swiglu vector loop computes it (all lanes alike)."""
    rng = np.random.default_rng(1)
    g = (rng.standard_normal((3, 1000)) * 6).astype(np.float32)
    u = rng.standard_normal((3, 1000)).astype(np.float32)
    out = np.zeros_like(g)
    gated(0, g, u, out, 0, 1000, np.zeros(0, np.float32))
    e = np.empty(g.size, np.float32)
    _exps((-g).ravel(), e)
    assert np.array_equal(out, g / (np.float32(1) + e.reshape(g.shape)) * u)
    part = np.zeros_like(g)
    gated(0, g, u, part, 100, 357, np.zeros(0, np.float32))  # a thread's column share
    assert np.array_equal(part[:, 100:357], out[:, 100:357]) and not part[:, :100].any()


def test_rope_fuses_multiply_adds_as_named():
    """x0·cos − x1·sin and x1·cos + x0·sin, each with one fused multiply-add (the form that measured closest
    to llama.cpp); checked against float64 arithmetic rounded once per fma."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 3, 16)).astype(np.float32)
    cos, sin = rng.standard_normal((2, 4, 8)).astype(np.float32)
    for neox in (False, True):
        got = rope(x.copy(), cos, sin, neox)
        a = np.arange(8) if neox else 2 * np.arange(8)
        b = a + 8 if neox else a + 1
        x0, x1 = x[:, :, a].astype(np.float64), x[:, :, b].astype(np.float64)
        c, s = cos[:, None].astype(np.float64), sin[:, None].astype(np.float64)
        # fma(x0, cos, -(x1·sin)): x1·sin rounded to float32 first, then one rounding of the fused sum
        want_a = (x0 * c - (x1 * s).astype(np.float32)).astype(np.float32)
        want_b = (x1 * c + (x0 * s).astype(np.float32)).astype(np.float32)
        assert np.array_equal(got[:, :, a], want_a) and np.array_equal(got[:, :, b], want_b)


def test_attention_sums_have_one_order():
    """The f32 cache's dot product (fixed 8-lane partials, not whatever LLVM vectorises) and the softmax stay
    within float32 rounding of the exact values at every length; the softmax sums as ggml's does."""
    rng = np.random.default_rng(3)
    for n in (1, 7, 8, 31, 64, 100, 256):
        a, b = rng.standard_normal((2, n)).astype(np.float32)
        exact = float(a.astype(np.float64) @ b.astype(np.float64))
        assert abs(_dot_f32(a, b) - exact) <= 1e-5 * (np.abs(a) @ np.abs(b) + 1)
        sc = (a * 4).astype(np.float32)
        _softmax(sc)
        ref = np.exp(a.astype(np.float64) * 4 - (a * 4).max())
        assert np.allclose(sc, ref / ref.sum(), rtol=3e-6, atol=1e-9)
        e = np.empty_like(a)
        _exps(a * 4 - (a * 4).max(), e)
        total = 0.0  # in float64: each group of 8, then the tail value by value
        for v in [_lanes_in_ggml_order(e[i:i + 8]) for i in range(0, n - n % 8, 8)] + list(e[n - n % 8:]):
            total += float(v)
        assert np.array_equal(sc, e * np.float32(1.0 / total))


@nb.njit(cache=False)
def _scores_one_by_one(a, B, scale, cap, out):
    for k in range(B.shape[0]):
        out[k] = _capped(_dot_f32(a, B[k]) * scale, cap)


def test_four_dots_at_once_give_each_dots_bits():
    """attend_task_f32 scores four cached rows per call (_dots4_f32); each score must be the very float of
    _dot_f32 on that row alone, so a row's attention does not depend on how its positions are grouped."""
    rng = np.random.default_rng(5)
    for n in (1, 5, 8, 31, 64, 72, 80, 128, 256):
        for cap in (0.0, 30.0):
            a = rng.standard_normal(n).astype(np.float32)
            B = (rng.standard_normal((9, n)) * 3).astype(np.float32)
            want, got = np.empty(9, np.float32), np.full(11, np.nan, np.float32)
            _scores_one_by_one(a, B, np.float32(0.125), np.float32(cap), want)
            _dots4_f32(a, B, 1, got, 2, np.float32(0.125), np.float32(cap))  # rows 1..4 into got[2:6]
            _dots4_f32(a, B, 5, got, 6, np.float32(0.125), np.float32(cap))  # rows 5..8 into got[6:10]
            assert np.array_equal(got[2:10].view(np.uint32), want[1:9].view(np.uint32))
            assert np.isnan(got[:2]).all() and np.isnan(got[10:]).all()


def test_attention_tasks_cover_every_row_and_head_once():
    """_task hands rows out from both ends in turn (balanced prange shares); every (row, KV head, first query
    head) is still one task, for prefill-sized tasks of a whole group and decode-sized ones of one head."""
    for n_tok in range(1, 10):
        for n_kv, group, per in ((3, 3, 3), (3, 3, 1), (2, 6, 6), (2, 6, 1), (4, 1, 1)):
            jobs = [_task(j, n_tok, n_kv, group, per) for j in range(n_tok * n_kv * group // per)]
            assert sorted(jobs) == sorted((t, kv, kv * group + s * per) for t in range(n_tok)
                                          for kv in range(n_kv) for s in range(group // per))
            assert [t for t, _, _ in jobs[::n_kv * group // per]][:3] == [0, n_tok - 1, 1][:n_tok]


def _lanes_in_ggml_order(v: np.ndarray) -> np.float32:
    """ggml's AVX2 horizontal sum of 8 floats: halves added, then pairs, then the two left."""
    s4 = v[:4] + v[4:]
    s2 = s4[:2] + s4[2:]
    return s2[0] + s2[1]
