"""Quantized kernels: bit-exact dequantization, matvec/matmul accuracy, quantizers, embedding lookup, errors."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as GT
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize

from gguf_runtime.gguf_file import GGUFFile
from gguf_runtime.quants import (QTYPES, QMatrix, UnsupportedQuantError, dequantize, embed_rows, get_qtype,
                                 quantize, set_threads)
from gguf_runtime.quants.activation import quantize_q8_0, quantize_q8_k
from gguf_runtime.quants import kernels
from gguf_runtime.quants.kernels import GEMM_MIN_TOKENS, GEMM_TYPES, PANEL_BYTES, ROW_BLOCK_BYTES
from gguf_runtime.quants.qmatrix import INTEGER_PATH_MAX_TOKENS, matmul_many
from gguf_runtime.quants.registry import ACT_F32, ACT_Q8_0

ALL = sorted(QTYPES)
BLOCK_TYPES = [t for t in ALL if QTYPES[t].block_size > 1]
LEGACY = [GT.Q4_0, GT.Q4_1, GT.Q5_0, GT.Q5_1, GT.Q8_0]
NAMES = {t: QTYPES[t].name for t in ALL}


def ids(types):
    return [NAMES[t] for t in types]


def cols_for(t, n_blocks=2):
    """Row length: whole blocks, or for float types a length that leaves a tail after the 8-wide vectors."""
    return QTYPES[t].block_size * n_blocks if QTYPES[t].block_size > 1 else 100


def weights(rng, n, k):
    """Gaussian rows with per-row magnitudes spanning 3 decades, a few outliers (what real layers look like)."""
    w = rng.standard_normal((n, k)).astype(np.float32) * np.logspace(-2, 1, n, dtype=np.float32)[:, None]
    w[rng.random((n, k)) < 0.01] *= 8
    return w


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-identical float32 arrays, except that any nan matches any nan."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    nan = np.isnan(a)
    return a.shape == b.shape and np.array_equal(nan, np.isnan(b)) and \
        np.array_equal(a[~nan].view(np.uint32), b[~nan].view(np.uint32))


# ------------------------------------------------------------------------------------------- registry

def test_every_type_has_gguf_geometry():
    from gguf import GGML_QUANT_SIZES
    for t, q in QTYPES.items():
        assert (q.block_size, q.type_size) == GGML_QUANT_SIZES[GT(t)]
        assert q.name == GT(t).name
        assert get_qtype(t) is q


@pytest.mark.parametrize("bad", [GT.IQ2_XXS, GT.TQ1_0, 999])
def test_unsupported_type_names_tensor_and_type(bad):
    with pytest.raises(UnsupportedQuantError) as err:
        get_qtype(bad, "blk.3.ffn_down.weight")
    msg = str(err.value)
    assert "blk.3.ffn_down.weight" in msg
    assert (GT(bad).name if bad != 999 else "999") in msg
    with pytest.raises(UnsupportedQuantError, match="blk.0.attn_q.weight"):
        QMatrix(np.zeros((2, 66), np.uint8), bad, "blk.0.attn_q.weight")


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="multiple"):
        QMatrix(np.zeros((2, 19), np.uint8), GT.Q4_0, "w")
    with pytest.raises(ValueError, match="2-D"):
        QMatrix(np.zeros(36, np.uint8), GT.Q4_0, "w")
    with pytest.raises(ValueError, match="C-contiguous"):
        QMatrix(np.zeros((4, 36), np.uint8)[:, ::2], GT.Q4_0, "w")
    m = QMatrix(quantize(np.ones((3, 64), np.float32), GT.Q8_0), GT.Q8_0, "w")
    with pytest.raises(ValueError, match="n_cols=64"):
        m.matvec(np.ones(32, np.float32))
    with pytest.raises(ValueError, match="out must be"):
        m.matvec(np.ones(64, np.float32), out=np.empty(4, np.float32))
    with pytest.raises(ValueError, match="out must be"):
        m.matmul(np.ones((2, 64), np.float32), out=np.empty((2, 3), np.float64))


# --------------------------------------------------------------------------------------- dequantize

@pytest.mark.parametrize("t", ALL, ids=ids(ALL))
def test_dequantize_random_bytes_bit_exact(t):
    """Any bytes at all (nan/inf/subnormal scales included) decode exactly as gguf-py does."""
    rng = np.random.default_rng(t)
    q = QTYPES[t]
    raw = rng.integers(0, 256, (5, q.row_bytes(cols_for(t, 3))), dtype=np.uint8)
    with np.errstate(all="ignore"):
        ref = gguf_dequantize(raw, GT(t))
    assert same_bits(dequantize(raw, t), ref)
    # leading dimensions are kept, a single row works
    assert same_bits(dequantize(raw.reshape(5, 1, -1), t), ref.reshape(5, 1, -1))
    assert same_bits(dequantize(raw[2], t), ref[2])


@pytest.mark.parametrize("t", BLOCK_TYPES, ids=ids(BLOCK_TYPES))
def test_dequantize_quantized_weights_bit_exact(t):
    raw = quantize(weights(np.random.default_rng(1), 7, cols_for(t, 4)), t)
    assert same_bits(dequantize(raw, t), gguf_dequantize(raw, GT(t)))


def test_dequantize_reader_dtypes():
    """F32/F16/BF16 arrive from the reader as float32/float16/uint16 rather than bytes."""
    x = np.random.default_rng(2).standard_normal((3, 40)).astype(np.float32)
    assert same_bits(dequantize(x, GT.F32), x)
    assert same_bits(dequantize(x.astype(np.float16), GT.F16), x.astype(np.float16).astype(np.float32))
    bf = quantize(x, GT.BF16).view(np.uint16)
    assert same_bits(dequantize(bf, GT.BF16), gguf_dequantize(bf.view(np.uint8), GT.BF16))


MODEL_FIXTURES = ["smollm2_path", "qwen05_path", "qwen15_path"]


@pytest.mark.parametrize("fixture", MODEL_FIXTURES)
def test_real_tensors(fixture, request):
    """For every 2-D tensor type in the model: a few rows dequantize bit-exactly, and matvec on 40 rows
    stays within the activation-quantization bound."""
    gguf = GGUFFile(request.getfixturevalue(fixture))
    seen = set()
    rng = np.random.default_rng(3)
    for name, info in gguf.tensors.items():
        if len(info.shape) != 2 or info.ggml_type in seen:
            continue
        seen.add(info.ggml_type)
        data = gguf.tensor_data(name)
        rows = np.concatenate([data[:3], data[-2:]])
        assert same_bits(dequantize(rows, info.ggml_type), gguf_dequantize(rows.view(np.uint8) if
                         data.dtype == np.uint8 else rows, GT(info.ggml_type))), name
        w = QMatrix(np.ascontiguousarray(data[:40]), info.ggml_type, name)
        x = rng.standard_normal(w.n_cols).astype(np.float32)
        check_matvec(w, x, dequantize(data[:40], info.ggml_type).astype(np.float64))
    assert seen, "no 2-D tensors found"


# ------------------------------------------------------------------------------------ matvec / matmul

def quantized_activation(qtype, x: np.ndarray):
    """x as the kernels multiply by it after activation quantization (float64), and a bound on |x - that|.

    Q8_0 (blocks of 32): q = rint(x * 127/amax), stored scale d16 = half(amax/127), x_hat = q * d16, so
    |x - x_hat| <= d/2 + 127 * |d - d16| <= d * (1/2 + 127 * 2^-11) with d = amax/127.
    Q8_K (blocks of 256): float32 scale, |x - x_hat| <= d/2 (plus float32 rounding of the scale).
    """
    k = x.shape[0]
    if qtype.activation == ACT_F32:
        return x.astype(np.float64), np.zeros(k)
    xq, xd, xs = np.zeros(k, np.int8), np.zeros(k // 32, np.float32), np.zeros(k // 16, np.int16)
    block = 32 if qtype.activation == ACT_Q8_0 else 256
    (quantize_q8_0 if qtype.activation == ACT_Q8_0 else quantize_q8_k)(x, xq, xd, xs)
    x_hat = xq.astype(np.float64) * np.repeat(xd[:k // block].astype(np.float64), block)
    d = np.repeat(np.abs(x.astype(np.float64)).reshape(-1, block).max(axis=1) / 127, block)
    return x_hat, d * ((0.5 + 127 * 2.0 ** -11) if block == 32 else (0.5 + 2.0 ** -20))


def check_matvec(m: QMatrix, x: np.ndarray, wd: np.ndarray, y: np.ndarray | None = None,
                 fp_rel: float = 2e-5) -> None:
    """y = m.matvec(x) (or a matmul row) against float64 references.

    1. Against W @ x_hat (x_hat = the Q8 activation the kernel multiplies by): integer block dots are
       exact, so only float32 rounding of ~K/32 scaled block sums remains; 2e-5 * sum|w||x_hat| is ~10x
       that worst case, and far below one wrong weight (~|w_i x_i|, ~1e-3 of the sum at K=512). BLAS rows
       (tiled matmul) pass fp_rel = the float32 dot-product bound K * 2^-24.
    2. Against W @ x: |error| <= sum_i |w_i| * |x_i - x_hat_i| (bounded per block, see
       quantized_activation), plus the same float32 term.
    """
    y = m.matvec(x) if y is None else y
    x_hat, err = quantized_activation(m.qtype, x)
    fp_tol = fp_rel * (np.abs(wd) @ np.abs(x_hat)) + 1e-30
    assert np.all(np.abs(y - wd @ x_hat) <= fp_tol), np.max(np.abs(y - wd @ x_hat) / fp_tol)
    bound = np.abs(wd) @ err + fp_rel * (np.abs(wd) @ np.abs(x.astype(np.float64))) + 1e-30
    assert np.all(np.abs(y - wd @ x.astype(np.float64)) <= bound)


@pytest.mark.parametrize("t", ALL, ids=ids(ALL))
def test_matvec_within_activation_bound(t):
    rng = np.random.default_rng(10 + t)
    k = cols_for(t, 3 if QTYPES[t].block_size == 256 else 7)
    for n in (1, 37):  # 37: not a multiple of the thread count or of the row blocks
        raw = quantize(weights(rng, n, k), t)
        m = QMatrix(raw, t, "w")
        x = rng.standard_normal(k).astype(np.float32)
        x[rng.integers(0, k, 3)] *= 20  # outliers make the Q8 scales uneven across blocks
        wd = dequantize(raw, t).astype(np.float64)
        check_matvec(m, x, wd)
        out = np.full(n, np.nan, np.float32)
        assert m.matvec(x, out=out) is out
        check_matvec(m, x, wd, out)


@pytest.mark.parametrize("t", ALL, ids=ids(ALL))
def test_matmul_matches_matvec_per_token(t):
    """Both strategies (integer kernels, dequantized tiles + BLAS) for odd token counts."""
    rng = np.random.default_rng(20 + t)
    k = cols_for(t, 2)
    raw = quantize(weights(rng, 29, k), t)
    m = QMatrix(raw, t, "w")
    wd = dequantize(raw, t).astype(np.float64)
    for n_tokens in (1, 3, 17, 69):
        X = rng.standard_normal((n_tokens, k)).astype(np.float32)
        Y = m.matmul(X)
        assert Y.shape == (n_tokens, 29)
        Yi = m.matmul_integer(X)
        for i in range(n_tokens):
            check_matvec(m, X[i], wd, Yi[i])
        # tiles: float32 GEMM of the exactly dequantized weights with the same rounded activation
        Yt = m.matmul_tiled(X, out=np.empty((n_tokens, 29), np.float32))
        for i in range(n_tokens):
            check_matvec(m, X[i], wd, Yt[i], fp_rel=k * 2.0 ** -24 + 2e-5)
        integer = t in GEMM_TYPES or (
            n_tokens <= INTEGER_PATH_MAX_TOKENS[QTYPES[t].block_size] and t != GT.F32)
        assert np.array_equal(Y, Yi if integer else Yt)
    assert m.matmul(np.zeros((0, k), np.float32)).shape == (0, 29)


@pytest.mark.parametrize("t", sorted(GEMM_TYPES), ids=ids(sorted(GEMM_TYPES)))
@pytest.mark.parametrize("threads", [1, 2])
def test_gemm_bit_identical_to_matvec(t, threads):
    """The integer GEMM gives every (token, row) exactly matvec's bits: across two row blocks, from its first
    token count on, in groups of 8, 4 and 2 and single tokens, a full token panel plus a remainder, zero and
    outlier activations, 1 or 2 threads."""
    rng = np.random.default_rng(30 + t)
    k = 512
    n_rows = ROW_BLOCK_BYTES // QTYPES[t].row_bytes(k) + 7
    raw = quantize(weights(rng, n_rows, k), t)
    raw[3] = 0  # an all-zero row: zero scales
    m = QMatrix(raw, t, "w")
    X = rng.standard_normal((max(2, PANEL_BYTES // k) + 3, k)).astype(np.float32)
    X[1] = 0
    X[2, :256] *= 1e4
    expected = np.stack([m.matvec(x) for x in X])
    try:
        set_threads(threads)
        for n_tokens in (GEMM_MIN_TOKENS[t], 6, 7, 8, 13, X.shape[0]):  # remainders of 2, 3, 0 and 1
            assert same_bits(m.matmul_integer(X[:n_tokens]), expected[:n_tokens])
    finally:
        set_threads(2)


@pytest.mark.parametrize("t", sorted(GEMM_TYPES), ids=ids(sorted(GEMM_TYPES)))
def test_gemm_below_its_crossover_still_exact(t):
    """Called directly with fewer tokens than GEMM_MIN_TOKENS (1-3, under a group of 4), the GEMM stays inside
    its inputs and still gives matvec's bits: a short group repeats its last token."""
    rng = np.random.default_rng(40 + t)
    m = QMatrix(quantize(weights(rng, 13, 512), t), t, "w")
    X = rng.standard_normal((3, 512)).astype(np.float32)
    expected = np.stack([m.matvec(x) for x in X])
    for n in (1, 2, 3):
        out = np.full((n, 13), np.nan, np.float32)
        m._run(kernels.matmul_panels, X[:n], m._activation_scratch(n), out)
        assert same_bits(out, expected[:n])


def test_matmul_threads():
    """Same numbers with 1 and 2 threads (rows are split, never a sum)."""
    rng = np.random.default_rng(5)
    raw = quantize(weights(rng, 45, 512), GT.Q4_K)
    m = QMatrix(raw, GT.Q4_K)
    X = rng.standard_normal((3, 512)).astype(np.float32)
    try:
        set_threads(1)
        one = m.matmul_integer(X)
        set_threads(2)
        two = m.matmul_integer(X)
    finally:
        set_threads(2)
    assert np.array_equal(one, two)


def test_matmul_many_matches_each_matmul():
    """Matrices read together (Q, K, V) give each matrix's own matmul bits: same-type ones through the one
    grouped kernel, whose row split crosses matrix boundaries, another type alone, at 1 and 2 threads."""
    rng = np.random.default_rng(6)
    k = 256
    mats = [QMatrix(quantize(weights(rng, n, k), t), t, f"w{i}")
            for i, (n, t) in enumerate([(40, GT.Q4_1), (24, GT.Q4_1), (16, GT.Q8_0), (9, GT.Q4_1)])]
    X = rng.standard_normal((5, k)).astype(np.float32)
    try:
        for threads in (1, 2):
            set_threads(threads)
            for n_tokens in (1, 3, 5):  # rows kernel (grouped), and from GEMM_MIN_TOKENS the GEMM per matrix
                for integer_only in (False, True):
                    got = matmul_many(mats, X[:n_tokens], integer_only)
                    assert all(same_bits(y, m.matmul_integer(X[:n_tokens])) for y, m in zip(got, mats))
    finally:
        set_threads(2)
    with pytest.raises(ValueError, match="input width"):
        matmul_many([mats[0], QMatrix(quantize(weights(rng, 4, 512), GT.Q4_1), GT.Q4_1)], X)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, 10_000])
def test_set_threads_validates(bad):
    with pytest.raises(ValueError, match="threads"):
        set_threads(bad)


# --------------------------------------------------------------------------------------- embed_rows

@pytest.mark.parametrize("t", [GT.F32, GT.F16, GT.Q8_0, GT.Q4_K, GT.Q6_K], ids=["F32", "F16", "Q8_0", "Q4_K", "Q6_K"])
def test_embed_rows(t):
    raw = quantize(weights(np.random.default_rng(6), 50, 256), t)
    table = raw.view(np.float32) if t == GT.F32 else raw
    ids_ = np.array([3, 0, 49, 3])
    out = np.full((4, 256), np.nan, np.float32)
    assert embed_rows(table, t, ids_, out) is out
    assert same_bits(out, gguf_dequantize(raw[ids_], GT(t)))
    assert embed_rows(table, t, []).shape == (0, 256)
    with pytest.raises(IndexError, match="50"):
        embed_rows(table, t, [1, 50], np.empty((2, 256), np.float32))
    with pytest.raises(ValueError, match="out must be"):
        embed_rows(table, t, [1], np.empty((2, 256), np.float32))


# ---------------------------------------------------------------------------------------- quantizers

def legacy_blocks(rng):
    x = weights(rng, 9, 256)
    x[0, :32] = 0                      # an all-zero block
    x[1, 5] = 1e4                      # one dominant value
    x[2, :32] = -np.abs(x[2, :32])     # largest magnitude negative
    x[3, :32] = 0.25                   # constant block (Q4_1/Q5_1: max == min)
    return x


@pytest.mark.parametrize("t", LEGACY + [GT.F16, GT.BF16], ids=ids(LEGACY + [GT.F16, GT.BF16]))
def test_quantize_bit_exact_with_gguf(t):
    x = legacy_blocks(np.random.default_rng(7))
    assert np.array_equal(quantize(x, t), gguf_quantize(x, GT(t)).view(np.uint8).reshape(9, -1))


def test_quantize_f32_is_identity():
    x = weights(np.random.default_rng(8), 3, 40)
    assert np.array_equal(quantize(x, GT.F32).view(np.float32), x)


# rms(dequantize(quantize(x)) - x) / rms(x) for Gaussian rows, measured with llama.cpp's reference
# algorithms, times ~1.2; a broken search or packing lands far above.
ROUND_TRIP_RMSE = {GT.Q2_K: 0.35, GT.Q3_K: 0.18, GT.Q4_K: 0.085, GT.Q5_K: 0.043, GT.Q6_K: 0.021,
                   GT.IQ4_NL: 0.09, GT.IQ4_XS: 0.09, GT.Q4_0: 0.10, GT.Q4_1: 0.093, GT.Q5_0: 0.05,
                   GT.Q5_1: 0.045, GT.Q8_0: 0.0063, GT.F16: 2.5e-4, GT.BF16: 2e-3}


@pytest.mark.parametrize("t", list(ROUND_TRIP_RMSE), ids=ids(ROUND_TRIP_RMSE))
def test_quantize_round_trip_error(t):
    x = np.random.default_rng(9).standard_normal((16, 1024)).astype(np.float32)
    y = dequantize(quantize(x, t), t)
    rel = np.sqrt(np.mean((y - x) ** 2) / np.mean(x ** 2))
    assert rel < ROUND_TRIP_RMSE[t]
    assert not np.any(dequantize(quantize(np.zeros((1, 256), np.float32), t), t))  # zeros stay zeros
    if t not in (GT.Q2_K, GT.Q3_K):  # 4+ bits: values away from zero keep their sign
        big = np.sign(x[0]) * (np.abs(x[0]) + 1)
        assert np.all(np.sign(dequantize(quantize(big[None], t), t)[0]) == np.sign(big))
