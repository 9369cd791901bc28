"""The SIMD layer: half-precision conversions, and the portable LLVM IR path (what non-AVX2 CPUs and
Apple Silicon run) against the x86 fast path this machine uses."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from gguf import GGMLQuantizationType as GT
from numba import njit
from numba.core import caching

from gguf_runtime.quants import QTYPES, dequantize, quantize, simd
from gguf_runtime.quants.activation import quantize_q8_0, quantize_q8_k
from gguf_runtime.quants.halves import f16_bits_to_f32, f32_to_f16_bits
from gguf_runtime.quants.kernels import GEMM_SUPERBLOCKS
from gguf_runtime.quants.registry import ACT_Q8_0

ALL_HALVES = np.arange(65536, dtype=np.uint32).astype(np.uint16)


@pytest.fixture
def generic_ir(monkeypatch):
    """Kernels compiled inside this fixture use only target-independent IR (no AVX2, F16C, NEON). None of them is
    saved to the disk cache: a cached kernel first compiled here (a callee of a fresh kernel, or the fast path
    called for comparison) would otherwise be loaded as generic code by every later process."""
    monkeypatch.setattr(simd, "USE_X86_AVX2", False)
    monkeypatch.setattr(simd, "USE_NATIVE_F16", False)
    monkeypatch.setattr(simd, "USE_ARM_NEON", False)
    monkeypatch.setattr(simd, "USE_ARM_DOTPROD", False)
    monkeypatch.setattr(simd, "USE_X86_VNNI", False)
    monkeypatch.setattr(caching.Cache, "save_overload", lambda self, sig, data: None)


def fresh(dispatcher):
    """A new, uncached compilation of a kernel, so the current code-generation flags apply."""
    return njit(dispatcher.py_func)


@njit
def _decode_all(h, out):
    for i in range(h.size):
        out[i] = f16_bits_to_f32(h[i])


@njit
def _encode_all(x, out):
    for i in range(x.size):
        out[i] = f32_to_f16_bits(x[i])


def _f16_at_all(raw, out):
    for i in range(out.size):
        out[i] = simd.f16_at(raw, 2 * i)


def _f16x8_all(raw, out):
    for i in range(0, out.size, 8):
        simd.store_f32x8(out, i, simd.load_f16x8(raw, 2 * i))


def _nan_aware_equal(a, b):
    nan = np.isnan(b)
    return np.array_equal(np.isnan(a), nan) and np.array_equal(a[~nan].view(np.uint32), b[~nan].view(np.uint32))


def _widened_halves(h):
    """IEEE half bits -> float32, exactly, NaN payloads kept: numpy's software conversion (x86). On AArch64
    numpy converts in hardware, which quiets signalling NaNs, so NaNs are widened here by hand."""
    with np.errstate(invalid="ignore"):
        bits = h.view(np.float16).astype(np.float32).view(np.uint32)
    h32 = h.astype(np.uint32)
    nan = ((h32 & 0x7C00) == 0x7C00) & ((h32 & 0x3FF) != 0)
    return np.where(nan, ((h32 & 0x8000) << 16) | 0x7F800000 | ((h32 & 0x3FF) << 13), bits).view(np.float32)


def _narrowed_floats(x):
    """float32 -> IEEE half bits, rounding to nearest even; a NaN keeps its top payload bits and stays a NaN,
    as in numpy's software conversion (x86; on AArch64 numpy's hardware conversion quiets signalling NaNs)."""
    with np.errstate(all="ignore"):
        ref = x.astype(np.float16).view(np.uint16)
    b = x.view(np.uint32)
    nan_bits = ((b >> 16) & 0x8000) | 0x7C00 | np.maximum((b >> 13) & 0x3FF, 1)
    return np.where(np.isnan(x), nan_bits, ref).astype(np.uint16)


def test_half_decode_exhaustive():
    ref = _widened_halves(ALL_HALVES)
    out = np.empty(65536, np.float32)
    _decode_all(ALL_HALVES, out)
    assert np.array_equal(out.view(np.uint32), ref.view(np.uint32))  # nan payloads included
    for kernel in (njit(_f16_at_all), njit(_f16x8_all)):
        kernel(ALL_HALVES.view(np.uint8), out)
        assert _nan_aware_equal(out, ref)


def test_half_decode_exhaustive_generic_ir(generic_ir):
    ref = _widened_halves(ALL_HALVES)
    out = np.empty(65536, np.float32)
    for kernel in (njit(_f16_at_all), njit(_f16x8_all)):
        kernel(ALL_HALVES.view(np.uint8), out)
        assert np.array_equal(out.view(np.uint32), ref.view(np.uint32))


def test_half_encode_matches_numpy():
    with np.errstate(invalid="ignore"):
        halves = ALL_HALVES.view(np.float16).astype(np.float64)
    finite = halves[np.isfinite(halves)]
    finite.sort()
    midpoints = (finite[:-1] + finite[1:]) / 2  # ties: round to even
    rng = np.random.default_rng(0)
    with np.errstate(invalid="ignore"):
        x = np.concatenate([rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32),
                            halves.astype(np.float32), midpoints.astype(np.float32),
                            np.nextafter(midpoints.astype(np.float32), np.float32(np.inf)),
                            np.float32([65504, 65519.99, 65520, -65520, 1e-8, 2.0**-25, 3 * 2.0**-26])])
    out = np.empty(x.size, np.uint16)
    _encode_all(x, out)
    assert np.array_equal(out, _narrowed_floats(x))


def _activation(qtype, x):
    k = x.size
    xq, xd, xs = np.zeros(k, np.int8), np.zeros(k // 32, np.float32), np.zeros(k // 16, np.int16)
    (quantize_q8_0 if qtype.activation == ACT_Q8_0 else quantize_q8_k)(x, xq, xd, xs)
    return xq, xd, xs


# between them these use every intrinsic (compiling each costs ~1 s, so not all types)
GENERIC_DOT_TYPES = [GT.Q4_0, GT.Q5_1, GT.Q8_0, GT.Q2_K, GT.Q3_K, GT.Q4_K, GT.Q6_K, GT.IQ4_XS]


@pytest.mark.parametrize("t", GENERIC_DOT_TYPES, ids=[t.name for t in GENERIC_DOT_TYPES])
def test_generic_ir_dot_matches_fast_path(t, generic_ir):
    """Integer sums are exact either way, so both code paths give the same float32 result."""
    qtype = QTYPES[t]
    module = importlib.import_module(qtype.dot_row.py_func.__module__)
    rng = np.random.default_rng(t)
    x = rng.standard_normal(512).astype(np.float32)
    raw = quantize(rng.standard_normal((4, 512)).astype(np.float32), t)
    act = _activation(qtype, x)
    generic = fresh(module.dot_row)
    for row in raw:
        assert generic(row, x, *act) == qtype.dot_row(row, x, *act)


@pytest.mark.parametrize("t", sorted(GEMM_SUPERBLOCKS), ids=[GT(t).name for t in sorted(GEMM_SUPERBLOCKS)])
def test_generic_ir_gemm_interleave_matches_fast_path(t, generic_ir):
    """The GEMM's interleaving of 8 rows' super-blocks (transposes, scale vectors) is the same on the portable
    IR, and puts value 4g + b of row k at byte 32g + 4k + b (checked against the dequantized values)."""
    k, size = 512, QTYPES[t].type_size
    raw = quantize(np.random.default_rng(t).standard_normal((8, k)).astype(np.float32), t)
    flat, rows = raw.reshape(-1), tuple(r * raw.shape[1] for r in range(8))
    interleave = GEMM_SUPERBLOCKS[t].interleave_superblock
    generic = fresh(interleave)
    for o in (0, size):
        q, s, f = np.zeros(2048, np.uint8), np.zeros(384, np.int16), np.zeros(16, np.float32)
        q2, s2, f2 = np.ones(2048, np.uint8), np.ones(384, np.int16), np.ones(16, np.float32)
        generic(flat, rows, o, q, 0, s, 0, f, 0)
        interleave(flat, rows, o, q2, 0, s2, 0, f2, 0)
        used = 16 * (64 // GEMM_SUPERBLOCKS[t].GEMM_SCALE_GROUPS + 8)
        assert np.array_equal(q, q2) and np.array_equal(s[:used], s2[:used]) and np.array_equal(f, f2)
        # the rows' values, as the GEMM multiplies them: (value - offset) * per-value scale * d, minus the min
        values = q.reshape(64, 8, 4).transpose(1, 0, 2).reshape(8, 256).astype(np.int64)
        assert values.max() <= (15 if t == GT.Q4_K else 63)
        block = o // size
        exact = dequantize(raw, t)[:, 256 * block:256 * (block + 1)]
        per_scale = 4 * GEMM_SUPERBLOCKS[t].GEMM_SCALE_GROUPS
        scales = s[:16 * (256 // per_scale)].reshape(-1, 8, 2)[:, :, 0].T.astype(np.int64)  # (8 rows, scales)
        bias = s[used - 128:used].reshape(8, 8, 2).transpose(1, 0, 2).reshape(8, 16).astype(np.float32)
        d, m = f[:8], f[8:]
        integer = values * np.repeat(scales, per_scale, axis=1)
        if t == GT.Q4_K:  # w = d*sc*q - dmin*m: the min's weight sits under each pair of block sums
            approx = d[:, None] * integer + m[:, None] * np.repeat(bias[:, ::2], 32, axis=1)
        else:  # w = d*sc*(q - 32): the bias is the scale of each 16 values, times -32*d
            approx = d[:, None] * integer + m[:, None] * np.repeat(bias, 16, axis=1)
        assert np.allclose(approx, exact, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("t", [GT.Q6_K, GT.F16], ids=["Q6_K", "F16"])
def test_generic_ir_dequantize_bit_exact(t, generic_ir):
    qtype = QTYPES[t]
    raw = np.random.default_rng(t).integers(0, 256, (3, qtype.row_bytes(512)), dtype=np.uint8)
    generic = fresh(qtype.dequantize_row)
    out = np.empty((3, 512), np.float32)
    for row, y in zip(raw, out):
        generic(row, y)
    assert _nan_aware_equal(out, dequantize(raw, t))


@njit
def _byte_dots(u, v, x, out):
    for i in range(u.shape[0] // 32):
        simd.store_i32x8(out, 32 * i, simd.dot4(simd.load_u8x32(u, 32 * i), x, 32 * i))
        simd.store_i32x8(out, 32 * i + 8, simd.madd(simd.maddubs(simd.load_u8x32(u, 32 * i), x, 32 * i), 1, 1))
        simd.store_i32x8(out, 32 * i + 16, simd.dot4_s8(simd.load_u8x32(v, 32 * i), x, 32 * i))
        simd.store_i32x8(out, 32 * i + 24,
                         simd.madd(simd.maddubs_s8(simd.load_u8x32(v, 32 * i), x, 32 * i), 1, 1))


@pytest.mark.parametrize("path", ["fast", "generic"])
def test_dot4_equals_byte_pairs_summed(path, request):
    """dot4 / dot4_s8 (vpdpbusd, sdot or vpmaddubsw + vpmaddwd) give the integers of maddubs then madd by 1, and
    those of numpy, over the whole range the kernels feed them: unsigned weights up to 63, signed ones in
    [-128, 127], activations in [-127, 127]."""
    if path == "generic":
        request.getfixturevalue("generic_ir")
    rng = np.random.default_rng(7)
    n = 32 * 64
    u = rng.integers(0, 64, n).astype(np.uint8)
    v = rng.integers(-128, 128, n).astype(np.int8)
    x = rng.integers(-127, 128, n).astype(np.int8)
    u[:32], v[:32], x[:32] = 63, -128, -127  # the extremes
    out = np.zeros(n, np.int32)
    (fresh(_byte_dots) if path == "generic" else _byte_dots)(u, v.view(np.uint8), x, out)
    quads = lambda w: (w.astype(np.int32) * x).reshape(-1, 8, 4).sum(axis=2)  # noqa: E731
    got = out.reshape(-1, 4, 8)
    for k, expected in ((0, quads(u)), (1, quads(u)), (2, quads(v)), (3, quads(v))):
        assert np.array_equal(got[:, k], expected.reshape(-1, 8))


def _dot_row_asm(t) -> str:
    qtype = QTYPES[t]
    module = importlib.import_module(qtype.dot_row.py_func.__module__)
    kernel = fresh(module.dot_row)
    x = np.ones(256, np.float32)
    kernel(quantize(x[None], t)[0], x, *_activation(qtype, x))
    return kernel.inspect_asm(kernel.signatures[0])


def test_fast_path_uses_vector_dot_instructions():
    """On AVX2 hosts the Q4_K kernel runs on vpmaddubsw/vpmaddwd, on AArch64 with the dot-product extension on
    sdot; elsewhere on LLVM's own vector code. IQ4_NL's table lookups are vpshufb or tbl."""
    asm, lookups = _dot_row_asm(GT.Q4_K), _dot_row_asm(GT.IQ4_NL)
    if simd.USE_X86_AVX2:
        assert "vpmaddubsw" in asm and "vpmaddwd" in asm and "vpshufb" in lookups
        # the legacy blocks' byte dots: one vpdpbusd where the CPU has VNNI, else vpmaddubsw + vpmaddwd
        assert ("vpdpbusd" in lookups) == simd.USE_X86_VNNI
    elif simd.USE_ARM_DOTPROD:
        assert "sdot" in asm and "tbl" in lookups
    else:
        assert "pmaddubs" not in asm  # the generic path must not emit x86-only instructions
