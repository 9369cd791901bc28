"""The generic drivers, specialised per type: one source per job, one compiled kernel per (job, type).

numba cannot cache a kernel that takes another jitted function as an argument, so the drivers take the ggml
type id instead and are compiled with it as a compile-time literal (`Specialized`). `dot_row`,
`dequantize_row` and `quantize_activation` resolve that literal to the type's own row function in
registry.QTYPES while numba types the driver, so each type's kernel holds only its own inlined row function
(a run-time switch would inline all of them into one body, costing ~30% in register allocation and every
type's compile time), compiles when that type is first used, and is cached on disk per type.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange, types
from numba.core.errors import TypingError
from numba.extending import overload

from . import q4_0, q4_1, q4_k, q5_0, q5_1, q6_k, q8_0
from .activation import dequantize_into, quantize_q8_0, quantize_q8_k
from .registry import ACT_F32, ACT_Q8_0, Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q6_K, Q8_0, QTYPES
from .simd import (broadcast4, broadcast_pair, dot4, dot4_s8, dots_add, f16_at, f32_at, fadd, fma_i, fmadd_i, fmul_s,
                   fzero, hsum, iadd, izero, load_f32x8, load_i16x16, load_u8x32, madd_v, maddubs_v, prefetch,
                   store_f32x8, store_u8x32)

ROW_BLOCK_BYTES = 1 << 16     # weight bytes per parallel task: fits L2 beside the activations
PARALLEL_MIN_BYTES = 1 << 16  # below this (weight bytes x tokens) a call runs on one thread
PANEL_BYTES = 1 << 18         # quantized activation bytes per token panel of the GEMM: stays in L2

# Types with an integer GEMM (`matmul_panels`), by how a row unpacks for it. K-quants: super-blocks of unsigned
# bytes times per-32 scales. Legacy blocks of 32: their values as bytes, signed, or unsigned plus a min (True).
GEMM_SUPERBLOCKS = {Q4_K: q4_k, Q6_K: q6_k}  # modules with interleave_superblock, GEMM_SCALE/CHUNK_GROUPS
GEMM_BLOCKS = {Q4_0: (q4_0.block_weights, False), Q5_0: (q5_0.block_weights, False), Q8_0: (q8_0.block_weights, False),
               Q4_1: (q4_1.block_weights, True), Q5_1: (q5_1.block_weights, True)}
GEMM_TYPES = frozenset(GEMM_SUPERBLOCKS) | frozenset(GEMM_BLOCKS)
# From this many tokens the GEMM beats the row kernels (`bench_kernels.py --crossover`): the super-block panel
# goes four tokens at a time (Q4_K 8960x1536 at 2 threads, 2026-12-03: rows 0.43-0.48 ms at T=2, 0.64-0.72 at
# T=3; the GEMM 0.64-0.71 at T=4); for blocks of 32 unpacking is cheap and the copy pays off from 4 tokens.
GEMM_MIN_TOKENS = {t: 4 for t in GEMM_TYPES}


def _qtype_of(code):
    if not isinstance(code, types.IntegerLiteral) or code.literal_value not in QTYPES:
        raise TypingError(f"the type id must be a compile-time literal of a supported type, got {code}")
    return QTYPES[code.literal_value]


def dot_row(code, w, x, xq, xd, xs):
    """w (one weight row as bytes) . x through type `code`'s kernel; xq/xd/xs are x quantized
    (activation.py). Jitted code only, with `code` a compile-time literal."""
    raise NotImplementedError


def dequantize_row(code, w, y):
    """One row of raw bytes -> float32 y, exactly as gguf-py / ggml dequantize it. Jitted code only."""
    raise NotImplementedError


def quantize_activation(code, x, xq, xd, xs):
    """x -> (xq, xd, xs) in the form type `code`'s dot_row wants (nothing for float weights). Jitted code only."""
    raise NotImplementedError


def dequantize_activation(code, xq, xd, out):
    """out = the activation type `code`'s dot_row multiplies by (xq times its block scales). Jitted code only."""
    raise NotImplementedError


def interleave_superblock(code, flat, rows, o, q, qo, s, so, f, fo):
    """The super-block at byte o of 8 rows (byte offsets `rows` in flat) in the GEMM's interleaved form, one
    row per 32-bit lane (the type's own interleave_superblock says where each part goes)."""
    raise NotImplementedError


def scale_groups(code):
    """How many groups of 4 values of a GEMM_SUPERBLOCKS type share one scale (a compile-time constant)."""
    raise NotImplementedError


def chunk_groups(code):
    """How many groups' i16 pair sums the GEMM adds before one scale multiply (fits i16; a constant)."""
    raise NotImplementedError


def block_weights(code, w, o):
    """The 32 values of the GEMM_BLOCKS block at w[o] as bytes (signed, or unsigned for types with a min)."""
    raise NotImplementedError


def block_isum(code, v, xq, xo):
    """v (block_weights) . xq[xo:xo+32] in 8 lanes, as the type's dot_row sums it."""
    raise NotImplementedError


def has_min(code):
    """Whether a GEMM_BLOCKS type adds min * (block sum of the activation) per block."""
    raise NotImplementedError


def panel(code, W, xq, xd, xs, out, r0, r1, t0, t1, q, s, dm):
    """The type's GEMM panel (_panel_superblocks or _panel_blocks)."""
    raise NotImplementedError


def _gemm_code(code, table):
    if not isinstance(code, types.IntegerLiteral) or code.literal_value not in table:
        raise TypingError(f"no integer GEMM of this form for type {code}")
    return code.literal_value


@overload(interleave_superblock, prefer_literal=True)
def _interleave_superblock(code, flat, rows, o, q, qo, s, so, f, fo):
    kernel = GEMM_SUPERBLOCKS[_gemm_code(code, GEMM_SUPERBLOCKS)].interleave_superblock
    return lambda code, flat, rows, o, q, qo, s, so, f, fo: kernel(flat, rows, o, q, qo, s, so, f, fo)


@overload(scale_groups, prefer_literal=True)
def _scale_groups(code):
    groups = GEMM_SUPERBLOCKS[_gemm_code(code, GEMM_SUPERBLOCKS)].GEMM_SCALE_GROUPS
    return lambda code: groups


@overload(chunk_groups, prefer_literal=True)
def _chunk_groups(code):
    groups = GEMM_SUPERBLOCKS[_gemm_code(code, GEMM_SUPERBLOCKS)].GEMM_CHUNK_GROUPS
    return lambda code: groups


@overload(block_weights, prefer_literal=True)
def _block_weights(code, w, o):
    kernel = GEMM_BLOCKS[_gemm_code(code, GEMM_BLOCKS)][0]
    return lambda code, w, o: kernel(w, o)


@overload(block_isum, prefer_literal=True)
def _block_isum(code, v, xq, xo):
    if GEMM_BLOCKS[_gemm_code(code, GEMM_BLOCKS)][1]:
        return lambda code, v, xq, xo: dot4(v, xq, xo)
    return lambda code, v, xq, xo: dot4_s8(v, xq, xo)


@overload(has_min, prefer_literal=True)
def _has_min(code):
    if GEMM_BLOCKS[_gemm_code(code, GEMM_BLOCKS)][1]:
        return lambda code: True
    return lambda code: False


@overload(panel, prefer_literal=True)
def _panel_of(code, W, xq, xd, xs, out, r0, r1, t0, t1, q, s, dm):
    if _gemm_code(code, GEMM_TYPES) in GEMM_SUPERBLOCKS:
        return lambda code, W, xq, xd, xs, out, r0, r1, t0, t1, q, s, dm: _panel_superblocks(
            code, W, xq, xd, xs, out, r0, r1, t0, t1, q, s, dm)
    return lambda code, W, xq, xd, xs, out, r0, r1, t0, t1, q, s, dm: _panel_blocks(
        code, W, xq, xd, xs, out, r0, r1, t0, t1, q, dm)


# Inlined into the drivers at numba IR level: left to LLVM, a big row kernel (Q4_K) stayed a call, and each row
# paid for it in five array views' atomic refcounts and ~35 stacked arguments (60 ns a row: 1536x1536 ran at
# half speed).
@overload(dot_row, prefer_literal=True, inline='always')
def _dot_row(code, w, x, xq, xd, xs):
    kernel = _qtype_of(code).dot_row
    return lambda code, w, x, xq, xd, xs: kernel(w, x, xq, xd, xs)


@overload(dequantize_row, prefer_literal=True)
def _dequantize_row(code, w, y):
    kernel = _qtype_of(code).dequantize_row
    return lambda code, w, y: kernel(w, y)


@overload(quantize_activation, prefer_literal=True)
def _quantize_activation(code, x, xq, xd, xs):
    activation = _qtype_of(code).activation
    if activation == ACT_F32:
        return lambda code, x, xq, xd, xs: None
    kernel = quantize_q8_0 if activation == ACT_Q8_0 else quantize_q8_k
    return lambda code, x, xq, xd, xs: kernel(x, xq, xd, xs)


@overload(dequantize_activation, prefer_literal=True)
def _dequantize_activation(code, xq, xd, out):
    activation = _qtype_of(code).activation
    if activation == ACT_F32:
        raise TypingError("float weights multiply the activation itself")
    block = 32 if activation == ACT_Q8_0 else 256
    return lambda code, xq, xd, out: dequantize_into(xq, xd, block, out)


@njit(cache=True, fastmath=False)
def _rows_per_task(n_rows, row_bytes, threads):
    """Rows per parallel task: blocks of ~ROW_BLOCK_BYTES (a block stays in L2 while every token passes over
    it), but a multiple of the thread count of them. prange hands each thread an equal contiguous share of
    the tasks, so with L2 blocks alone a 576-row matrix made 4 tasks and left 12 of 16 threads idle, and 21
    tasks on 16 threads took two rounds for five of them. `threads` is numba.get_num_threads() read by the
    caller in Python: read inside jitted code it is a ctypes global, and numba would not cache the kernel."""
    n_tasks = -(-n_rows // max(1, ROW_BLOCK_BYTES // row_bytes))
    n_tasks = threads * -(-n_tasks // threads)
    return max(1, -(-n_rows // n_tasks))


PREFETCH_BYTES = 2048  # how far ahead of the weight row being read the row kernels ask for the next bytes


@njit(cache=True, fastmath=False)
def _row_block(code, W, X, xq, xd, xs, out, r0, r1):
    """out[t, r] for rows r0..r1, token by token. In the first token's pass every 64-byte line of the weights
    PREFETCH_BYTES ahead of the row being read is asked for (a prefetch hint, which changes no value): a
    decode step streams every weight from memory once, and left to the hardware prefetchers (which stop at
    each 4 KiB page) a core drew ~6 GB/s. With the hint, decode at 2 threads (2026-12-03, Xeon VM, bench.py):
    Qwen2.5-Coder-1.5B 10.4 -> 19.3 tok/s, SmolLM2 97 -> 159, Gemma-3 53 -> 78; 1024 or 4096 bytes ahead were
    slower."""
    flat = W.reshape(-1)
    for t in range(X.shape[0]):
        for r in range(r0, r1):
            if t == 0:
                _ask_ahead(flat, r, W.shape[1])
            out[t, r] = dot_row(code, W[r], X[t], xq[t], xd[t], xs[t])


@njit(cache=True, fastmath=False)
def _ask_ahead(flat, r, row_bytes):
    """Prefetch hints for every 64-byte line PREFETCH_BYTES past row r's bytes.   flat: W.reshape(-1)"""
    last = flat.shape[0] - 1
    for b in range(r * row_bytes + PREFETCH_BYTES, (r + 1) * row_bytes + PREFETCH_BYTES, 64):
        prefetch(flat, min(b, last))


@njit(parallel=True, cache=True, fastmath=False)
def _matmul_rows(code, W, X, xq, xd, xs, out, threads):
    """out[t, r] = W[r] . X[t] for all rows r and tokens t, blocks of rows in parallel.

    X float32 (T, K); xq int8 (T, K), xd float32 (T, K/32), xs int16 (T, K/16) are scratch it fills.
    A block of rows (~64 KB) stays in L2 while every token's activation passes over it from L1, so
    each weight byte comes from memory once per call whatever T is. Small jobs stay on the calling
    thread: waking the others costs more than they would save.
    """
    for t in range(X.shape[0]):
        quantize_activation(code, X[t], xq[t], xd[t], xs[t])
    n_rows = W.shape[0]
    if W.size * X.shape[0] < PARALLEL_MIN_BYTES:
        _row_block(code, W, X, xq, xd, xs, out, 0, n_rows)
        return
    per = _rows_per_task(n_rows, W.shape[1], threads)
    for task in prange(-(-n_rows // per)):  # prange counts in uint64: cast, or _row_block compiles twice
        r0 = np.int64(task) * per
        _row_block(code, W, X, xq, xd, xs, out, r0, min(n_rows, r0 + per))


@njit(parallel=True, cache=True, fastmath=False)
def _matmul_rows_group(code, Ws, X, xq, xd, xs, outs, threads):
    """_matmul_rows for several matrices of one type and input width at once (Q, K and V; gate and up):
    one activation quantization and one parallel region instead of one each per matrix, and the tasks cut
    from all their rows together, so the threads share out small matrices (K, V) too.

    Ws: a tuple of (rows_m, row_bytes) weights   outs: a tuple of (T, rows_m) outputs; per row it computes
    exactly what _matmul_rows does.
    """
    for t in range(X.shape[0]):
        quantize_activation(code, X[t], xq[t], xd[t], xs[t])
    n_rows = 0
    for m in range(len(Ws)):
        n_rows += Ws[m].shape[0]
    per = _rows_per_task(n_rows, Ws[0].shape[1], threads)
    for task in prange(-(-n_rows // per)):
        g0 = np.int64(task) * per  # global rows g0..g1 of the matrices stacked in order
        g1 = min(n_rows, g0 + per)
        base = 0
        for m in range(len(Ws)):
            rows = Ws[m].shape[0]
            r0, r1 = max(g0 - base, 0), min(g1 - base, rows)
            if r0 < r1:
                _row_block(code, Ws[m], X, xq, xd, xs, outs[m], r0, r1)
            base += rows


@njit(cache=True, fastmath=False, inline="always")
def _superblock_totals4(code, q, s, qo, so, xq, xs, xo, bo):
    """The integer totals of one interleaved super-block (8 rows) with four tokens (each weight vector loaded
    once for all four): per row (lane) the scaled dot sum_s sc_s*(q.xq)_s and the block-sum term
    sum_p w_p . (bsum_2p, bsum_2p+1), exactly dot_row's two integers. Token j's 256 activation bytes are
    xq[xo[j]:] and its 16 block sums xs[bo[j]:]."""
    per_scale, per_chunk = scale_groups(code), chunk_groups(code)
    t0, t1, t2, t3 = izero(), izero(), izero(), izero()
    for c in range(64 // per_chunk):
        g = c * per_chunk
        v = load_u8x32(q, qo + 32 * g)
        p0, p1 = maddubs_v(v, broadcast4(xq, xo[0] + 4 * g)), maddubs_v(v, broadcast4(xq, xo[1] + 4 * g))
        p2, p3 = maddubs_v(v, broadcast4(xq, xo[2] + 4 * g)), maddubs_v(v, broadcast4(xq, xo[3] + 4 * g))
        for h in range(g + 1, g + per_chunk):
            v = load_u8x32(q, qo + 32 * h)
            p0 = dots_add(p0, maddubs_v(v, broadcast4(xq, xo[0] + 4 * h)))
            p1 = dots_add(p1, maddubs_v(v, broadcast4(xq, xo[1] + 4 * h)))
            p2 = dots_add(p2, maddubs_v(v, broadcast4(xq, xo[2] + 4 * h)))
            p3 = dots_add(p3, maddubs_v(v, broadcast4(xq, xo[3] + 4 * h)))
        scale = load_i16x16(s, so + 16 * (g // per_scale))
        t0, t1 = iadd(t0, madd_v(p0, scale)), iadd(t1, madd_v(p1, scale))
        t2, t3 = iadd(t2, madd_v(p2, scale)), iadd(t3, madd_v(p3, scale))
    s0, s1, s2, s3 = izero(), izero(), izero(), izero()
    for p in range(8):
        w = load_i16x16(s, so + 16 * (64 // per_scale + p))
        s0 = iadd(s0, madd_v(w, broadcast_pair(xs, bo[0] + 2 * p)))
        s1 = iadd(s1, madd_v(w, broadcast_pair(xs, bo[1] + 2 * p)))
        s2 = iadd(s2, madd_v(w, broadcast_pair(xs, bo[2] + 2 * p)))
        s3 = iadd(s3, madd_v(w, broadcast_pair(xs, bo[3] + 2 * p)))
    return t0, t1, t2, t3, s0, s1, s2, s3


@njit(cache=True, fastmath=False, inline="always")
def _superblock_totals2(code, q, s, qo, so, xq, xs, xo, bo):
    """_superblock_totals4 for two tokens: a panel's last one or two tokens (a verify pass of one draft is
    two rows) then pay for two, not four. A copy, not a building block: _superblock_totals4 made of two of
    these runs two loops that each load the weights (bench_kernels.py, Q4_K 8960x1536, 1 thread, 256 tokens:
    194 -> 162 GF/s)."""
    per_scale, per_chunk = scale_groups(code), chunk_groups(code)
    t0, t1 = izero(), izero()
    for c in range(64 // per_chunk):
        g = c * per_chunk
        v = load_u8x32(q, qo + 32 * g)
        p0, p1 = maddubs_v(v, broadcast4(xq, xo[0] + 4 * g)), maddubs_v(v, broadcast4(xq, xo[1] + 4 * g))
        for h in range(g + 1, g + per_chunk):
            v = load_u8x32(q, qo + 32 * h)
            p0 = dots_add(p0, maddubs_v(v, broadcast4(xq, xo[0] + 4 * h)))
            p1 = dots_add(p1, maddubs_v(v, broadcast4(xq, xo[1] + 4 * h)))
        scale = load_i16x16(s, so + 16 * (g // per_scale))
        t0, t1 = iadd(t0, madd_v(p0, scale)), iadd(t1, madd_v(p1, scale))
    s0, s1 = izero(), izero()
    for p in range(8):
        w = load_i16x16(s, so + 16 * (64 // per_scale + p))
        s0 = iadd(s0, madd_v(w, broadcast_pair(xs, bo[0] + 2 * p)))
        s1 = iadd(s1, madd_v(w, broadcast_pair(xs, bo[1] + 2 * p)))
    return t0, t1, s0, s1


@njit(cache=True, fastmath=False, inline="always")
def _token_update(acc, total, sums, f, i, dx):
    """dot_row's two float steps of super-block i for one token (dx its scale), on 8 rows' lanes."""
    return fma_i(fma_i(acc, total, fmul_s(load_f32x8(f, 16 * i), dx)), sums, fmul_s(load_f32x8(f, 16 * i + 8), dx))


@njit(cache=True, fastmath=False)
def _four_tokens_eight_rows(code, q, s, f, n_super, xqf, xdf, xsf, kd, ts, lanes):
    """Four tokens' (ts, indices into the activations) dots with the 8 rows interleaved in q, s, f, into
    lanes[8j:8j+8] for token ts[j]: lane k is row k's dot_row, bit for bit (the same integers, then the same two
    float steps per super-block, each rounded once, in its order). xqf, xdf, xsf: the (T, ...) activations as
    flat arrays, kd the length of a token's row of xd."""
    stride = 16 * (64 // scale_groups(code) + 8)
    kq, ks = 256 * n_super, 16 * n_super
    a0, a1, a2, a3 = fzero(), fzero(), fzero(), fzero()
    for i in range(n_super):
        xo = (ts[0] * kq + 256 * i, ts[1] * kq + 256 * i, ts[2] * kq + 256 * i, ts[3] * kq + 256 * i)
        bo = (ts[0] * ks + 16 * i, ts[1] * ks + 16 * i, ts[2] * ks + 16 * i, ts[3] * ks + 16 * i)
        t0, t1, t2, t3, s0, s1, s2, s3 = _superblock_totals4(code, q, s, 2048 * i, stride * i, xqf, xsf, xo, bo)
        a0 = _token_update(a0, t0, s0, f, i, xdf[ts[0] * kd + i])
        a1 = _token_update(a1, t1, s1, f, i, xdf[ts[1] * kd + i])
        a2 = _token_update(a2, t2, s2, f, i, xdf[ts[2] * kd + i])
        a3 = _token_update(a3, t3, s3, f, i, xdf[ts[3] * kd + i])
    store_f32x8(lanes, 0, a0)
    store_f32x8(lanes, 8, a1)
    store_f32x8(lanes, 16, a2)
    store_f32x8(lanes, 24, a3)


@njit(cache=True, fastmath=False)
def _two_tokens_eight_rows(code, q, s, f, n_super, xqf, xdf, xsf, kd, ts, lanes):
    """_four_tokens_eight_rows for two tokens, into lanes[0:16]: the same lanes' arithmetic, bit for bit."""
    stride = 16 * (64 // scale_groups(code) + 8)
    kq, ks = 256 * n_super, 16 * n_super
    a0, a1 = fzero(), fzero()
    for i in range(n_super):
        xo = (ts[0] * kq + 256 * i, ts[1] * kq + 256 * i)
        bo = (ts[0] * ks + 16 * i, ts[1] * ks + 16 * i)
        t0, t1, s0, s1 = _superblock_totals2(code, q, s, 2048 * i, stride * i, xqf, xsf, xo, bo)
        a0 = _token_update(a0, t0, s0, f, i, xdf[ts[0] * kd + i])
        a1 = _token_update(a1, t1, s1, f, i, xdf[ts[1] * kd + i])
    store_f32x8(lanes, 0, a0)
    store_f32x8(lanes, 8, a1)


@njit(cache=True, fastmath=False)
def _panel_superblocks(code, W, xq, xd, xs, out, r0, r1, t0, t1, q, s, f):
    """out[t, r] for rows r0..r1 and tokens t0..t1, by 8 rows at a time: their super-blocks interleaved once
    (interleave_superblock: one row per 32-bit lane, in L1/L2), then every token of the panel passes over
    them, each 4-value group of its activation broadcast to all 8 lanes, four tokens per weight vector
    loaded. Per (row, super-block) that is 64 byte dots (vpmaddubsw) for 8 rows at once and one scale
    multiply per sub-block (vpmaddwd), where a row at a time paid for the scale per row and ran the float
    steps per row. The last group of rows repeats the last row where fewer than 8 are left; a last group of
    one or two tokens goes two at a time, one of three repeats the last token. Lanes are dot_row's own
    arithmetic in its order, so results match it bitwise. q, s, f: scratch of panel_scratch."""
    n_super = xq.shape[1] // 256
    type_size = W.shape[1] // n_super
    stride = 16 * (64 // scale_groups(code) + 8)
    flat, xqf, xdf, xsf = W.reshape(-1), xq.reshape(-1), xd.reshape(-1), xs.reshape(-1)
    lanes = f[16 * n_super:16 * n_super + 32]
    last = r1 - 1
    for r in range(r0, r1, 8):
        rows = (min(r, last) * W.shape[1], min(r + 1, last) * W.shape[1], min(r + 2, last) * W.shape[1],
                min(r + 3, last) * W.shape[1], min(r + 4, last) * W.shape[1], min(r + 5, last) * W.shape[1],
                min(r + 6, last) * W.shape[1], min(r + 7, last) * W.shape[1])
        for row in range(r, min(r + 8, r1)):
            _ask_ahead(flat, row, W.shape[1])  # as the row kernels do: a batched decode step streams the weights
        for i in range(n_super):
            interleave_superblock(code, flat, rows, i * type_size, q, 2048 * i, s, stride * i, f, 16 * i)
        for t in range(t0, t1, 4):
            if t1 - t <= 2:  # the last one or two tokens: two at a time
                _two_tokens_eight_rows(code, q, s, f, n_super, xqf, xdf, xsf, xd.shape[1], (t, t1 - 1), lanes)
            else:  # (a short last four repeats t1 - 1)
                ts = (t, min(t + 1, t1 - 1), min(t + 2, t1 - 1), min(t + 3, t1 - 1))
                _four_tokens_eight_rows(code, q, s, f, n_super, xqf, xdf, xsf, xd.shape[1], ts, lanes)
            for g in range(min(4, t1 - t)):
                for j in range(min(8, r1 - r)):
                    out[t + g, r + j] = lanes[8 * g + j]


@njit(cache=True, fastmath=False)
def _blocks_token(code, q, dm, n_blocks, x, d, xs):
    """One token's dot with a row unpacked by _panel_blocks, in dot_row's order."""
    acc = fzero()
    mins = np.float32(0)
    for b in range(n_blocks):
        acc = fmadd_i(acc, block_isum(code, load_u8x32(q, 32 * b), x, 32 * b), dm[2 * b] * d[b])
        if has_min(code):
            mins += dm[2 * b + 1] * f32_at(xs, 2 * b)
    return hsum(acc) + mins if has_min(code) else hsum(acc)


@njit(cache=True, fastmath=False)
def _padded(tokens):
    return -(-tokens // 8) * 8


@njit(cache=True, fastmath=False)
def panel_floats(k, tokens):
    """Length of the float32 scratch `dm` a GEMM panel of up to `tokens` tokens of width k takes (see
    _panel_blocks for its layout; _panel_superblocks uses its first 16 * k/256 + 32)."""
    return (k // 32) * (10 + 2 * _padded(tokens)) + 8


@njit(cache=True, fastmath=False)
def panel_scratch(k, tokens):
    """Scratch for a GEMM panel of up to `tokens` tokens of width k, for any GEMM type: (q, s, dm) = the
    unpacked weights (8 interleaved rows of super-blocks, or one row of blocks), the super-blocks' scale
    vectors (at most 24 per super-block), and the float scales (panel_floats)."""
    return (np.empty(8 * k, np.uint8), np.empty(384 * (k // 256) + 16, np.int16),
            np.empty(panel_floats(k, tokens), np.float32))


@njit(cache=True, fastmath=False)
def _transposed_scales(code, xd, xs, t0, t1, xdT, xsT):
    """xdT[b, t - t0] = xd[t, b] and, for the types with a min, xsT[b, t - t0] = the block sum of xs[t]: each
    block's values of the panel's tokens side by side, so eight tokens' scale products are one vector
    multiply. Columns past t1 (to the next multiple of 8) are zero."""
    for b in range(xd.shape[1]):
        for t in range(t0, t0 + xdT.shape[1]):
            inside = t < t1
            xdT[b, t - t0] = xd[t, b] if inside else np.float32(0)
            if has_min(code):
                xsT[b, t - t0] = f32_at(xs[t], 2 * b) if inside else np.float32(0)


@njit(cache=True, fastmath=False)
def _group_scales(code, dm, xdT, xsT, c, sc):
    """For the eight tokens in columns c..c+8: sc[8b + g] = d_w(b) * d_x(token g, b), the product dot_row
    takes per block, and (types with a min) the eight sums over b of m_w(b) * s_x(token g, b), each in dot_row's
    order. Lane-wise float multiplies and adds round as dot_row's scalar ones do, so every lane is bitwise what
    dot_row computes for its token. A loop of its own, before the integer loop: fused into it, LLVM keeps sc in
    registers and broadcasts each lane with a shuffle, which costs more than reloading it."""
    mins = fzero()
    for b in range(xdT.shape[0]):
        store_f32x8(sc, 8 * b, fmul_s(load_f32x8(xdT[b], c), dm[2 * b]))
        if has_min(code):
            mins = fadd(mins, fmul_s(load_f32x8(xsT[b], c), dm[2 * b + 1]))
    return mins


@njit(cache=True, fastmath=False, inline="always")
def _four_tokens(code, q, n_blocks, sc, mn, lane, xq, t, out, r):
    """out[t:t+4, r] for the row unpacked in q: four FMA chains over its blocks, the tokens' scale products at
    sc[8b + lane...] and their min sums at mn[lane...] (_group_scales)."""
    x0, x1, x2, x3 = xq[t], xq[t + 1], xq[t + 2], xq[t + 3]
    a0, a1, a2, a3 = fzero(), fzero(), fzero(), fzero()
    for b in range(n_blocks):
        v, o = load_u8x32(q, 32 * b), 8 * b + lane
        a0 = fmadd_i(a0, block_isum(code, v, x0, 32 * b), sc[o])
        a1 = fmadd_i(a1, block_isum(code, v, x1, 32 * b), sc[o + 1])
        a2 = fmadd_i(a2, block_isum(code, v, x2, 32 * b), sc[o + 2])
        a3 = fmadd_i(a3, block_isum(code, v, x3, 32 * b), sc[o + 3])
    out[t, r], out[t + 1, r], out[t + 2, r], out[t + 3, r] = hsum(a0), hsum(a1), hsum(a2), hsum(a3)
    if has_min(code):
        for g in range(4):
            out[t + g, r] += mn[lane + g]


@njit(cache=True, fastmath=False)
def _panel_blocks(code, W, xq, xd, xs, out, r0, r1, t0, t1, q, dm):
    """_panel_superblocks for the legacy blocks of 32. Each row's block values go to q and its scales (and
    mins) to dm once; the tokens then pass in groups of eight (then four), whose per-block scale products
    (and min sums) are made for the whole group first (_group_scales), so the integer loop (_four_tokens) is
    per token and block only the byte dot (dot4), convert and FMA with a broadcast load: one FMA chain per token, in
    dot_row's order. Tokens left over take _blocks_token.

    dm: float32 scratch of panel_floats(K, t1 - t0): [(scale, min) per block | sc, 8 per block | 8 min sums |
    xdT, xsT: (blocks, t1 - t0 rounded up to 8) each]."""
    n_blocks = xq.shape[1] // 32
    type_size = W.shape[1] // n_blocks
    width = _padded(t1 - t0)
    sc = dm[2 * n_blocks:10 * n_blocks]
    mn = dm[10 * n_blocks:10 * n_blocks + 8]
    xdT = dm[10 * n_blocks + 8:10 * n_blocks + 8 + n_blocks * width].reshape(n_blocks, width)
    xsT = dm[10 * n_blocks + 8 + n_blocks * width:10 * n_blocks + 8 + 2 * n_blocks * width].reshape(n_blocks, width)
    _transposed_scales(code, xd, xs, t0, t1, xdT, xsT)
    flat = W.reshape(-1)
    for r in range(r0, r1):
        _ask_ahead(flat, r, W.shape[1])
        w = W[r]
        for b in range(n_blocks):
            o = b * type_size
            store_u8x32(q, 32 * b, block_weights(code, w, o))
            dm[2 * b], dm[2 * b + 1] = f16_at(w, o), f16_at(w, o + 2)  # scale, and the min where there is one
        t = t0
        while t + 8 <= t1:  # eight tokens' scales at a time, then their two halves
            store_f32x8(mn, 0, _group_scales(code, dm, xdT, xsT, t - t0, sc))
            _four_tokens(code, q, n_blocks, sc, mn, 0, xq, t, out, r)
            _four_tokens(code, q, n_blocks, sc, mn, 4, xq, t + 4, out, r)
            t += 8
        if t + 4 <= t1:
            store_f32x8(mn, 0, _group_scales(code, dm, xdT, xsT, t - t0, sc))
            _four_tokens(code, q, n_blocks, sc, mn, 0, xq, t, out, r)
            t += 4
        for t in range(t, t1):
            out[t, r] = _blocks_token(code, q, dm, n_blocks, xq[t], xd[t], xs[t])


@njit(parallel=True, cache=True, fastmath=False)
def _matmul_panels(code, W, X, xq, xd, xs, out, threads):
    """out = X @ W.T by the integer GEMM (GEMM_TYPES): bit-identical per row to _matmul_rows, faster from four
    tokens on (GEMM_MIN_TOKENS). Blocks of rows in parallel; within a block, panels of tokens whose activations
    stay in L2 while the block's rows (also in L2) pass over them."""
    for t in prange(X.shape[0]):
        quantize_activation(code, X[t], xq[t], xd[t], xs[t])
    rows_per_block = -(-_rows_per_task(W.shape[0], W.shape[1], threads) // 8) * 8  # the super-blocks' groups
    n_blocks = (W.shape[0] + rows_per_block - 1) // rows_per_block
    panel_tokens = max(2, PANEL_BYTES // xq.shape[1])
    k = xq.shape[1]
    for block in prange(n_blocks):
        q, s, dm = panel_scratch(k, min(X.shape[0], panel_tokens))
        r0 = np.int64(block) * rows_per_block
        r1 = min(W.shape[0], r0 + rows_per_block)
        for t0 in range(0, X.shape[0], panel_tokens):
            panel(code, W, xq, xd, xs, out, r0, r1, t0, min(X.shape[0], t0 + panel_tokens), q, s, dm)


@njit(cache=True, fastmath=False)
def _dequantize_rows(code, W, ids, out):
    """out[i] = dequantized W[ids[i]], on the calling thread: it is bandwidth-bound and fast enough (a 14M-value
    matrix in ~3 ms), and between BLAS calls of the tiled matmul waking numba's threads would make both
    thread pools fight over the cores. One kernel fewer to compile per type, too."""
    for i in range(ids.shape[0]):
        dequantize_row(code, W[ids[i]], out[i])


@njit(cache=True, fastmath=False)
def _rounded_activations(code, X, xq, xd, xs, out):
    """out[t] = X[t] as the integer kernels see it after activation quantization (for the tiled matmul, so
    both strategies, like llama.cpp, multiply quantized weights by the Q8-rounded activation)."""
    for t in range(X.shape[0]):
        quantize_activation(code, X[t], xq[t], xd[t], xs[t])
        dequantize_activation(code, xq[t], xd[t], out[t])


class Specialized:
    """Calls a driver compiled for a literal type id, skipping numba's per-call type dispatch.

    The first call for a given type id and argument types compiles (or loads from the disk cache) that
    specialisation through numba's public `compile`; later calls go straight to its entry point. Arguments
    are keyed by dtype, ndim, layout, alignment and writability, which is all a compiled signature depends
    on, so a mismatched array can never reach compiled code.
    """

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        self._entries: dict[tuple, object] = {}

    @staticmethod
    def _kind(a) -> object:
        if isinstance(a, np.ndarray):
            return a.dtype.num, a.ndim, a.flags.c_contiguous, a.flags.aligned, a.flags.writeable
        if isinstance(a, tuple):  # a tuple of arrays (matmul_rows_group) is typed by its elements
            return tuple(Specialized._kind(x) for x in a)
        return type(a)

    def __call__(self, code: int, *args):
        return self.entry(code, *args)(code, *args)

    def entry(self, code: int, *args):
        """The compiled entry point for this type id and these arguments' kinds (compiled on first use). A
        caller whose arguments keep their kinds may keep it and call it directly, skipping the per-call key."""
        key = (code, *(self._kind(a) for a in args))
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = self.compile(code, *args)
        return entry

    def compile(self, code: int, *args):
        """Compile (or load) the specialisation for this type id and these arguments; returns its entry."""
        sig = (types.literal(code), *(numba.typeof(a) for a in args))
        self.dispatcher.compile(sig)
        return self.dispatcher.overloads[sig].entry_point


matmul_rows = Specialized(_matmul_rows)
matmul_rows_group = Specialized(_matmul_rows_group)
matmul_panels = Specialized(_matmul_panels)
dequantize_rows = Specialized(_dequantize_rows)
rounded_activations = Specialized(_rounded_activations)
