"""Attention over the paged KV cache, and the kernels that write and read its blocks.

The pool (kv/pool.py) stores every cached key/value row — one head at one position, head_dim values — as
one row of a ggml type (F16 by default, Q8_0, F32, ...), in blocks of positions:

    K, V of one layer: uint8 (n_blocks, H_kv, block_tokens, row_bytes)

so the type's own row kernels (quants/) quantize, dot and dequantize them: a Q8_0 key is scored against a
Q8_0-quantized query with the integer dot product, as llama.cpp does for a quantized cache. A sequence
reaches its positions through its block table: position p lives in block table[p // block_tokens], slot
p % block_tokens.

Every kernel takes rows of several sequences at once (a batched decode step, a prompt chunk): row t belongs
to sequence seq[t] and sits at position pos[t]. Attention runs row by row, so a row's result does not
depend on what else is in the call. Drivers are compiled per KV type like the matmul drivers.
"""

from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange
from numba.extending import overload

from .ops import exp_f32
from .quants.halves import round_to_f16, store_f16
from .quants.kernels import Specialized, _qtype_of, dequantize_row, dot_row, quantize_activation
from .quants.registry import F16, F32
from .quants.simd import f32_bits, fadd, ffma, fma32, fzero, hsum, load_f32x8

# No fast-math: fused.py runs these same kernels inlined into its decode kernel, and a result must not depend
# on what LLVM reassociates or contracts in each context (the fused path is bit-identical to this one). The
# sums that fast-math would vectorise are written out in a fixed order instead (_dot_f32).
_JIT = dict(cache=True, fastmath=False, nogil=True)


def quantize_row(code, x, out):
    """One float32 row x (1, K) -> out (1, row_bytes) in type `code`'s layout. Jitted code only."""
    raise NotImplementedError


@njit(**_JIT)
def _store_f32_row(x, out):
    for i in range(x.shape[1]):
        b = f32_bits(x[0, i])
        for j in range(4):
            out[0, 4 * i + j] = (b >> (8 * j)) & 0xFF


@njit(**_JIT)
def _store_f16_row(x, out):
    for i in range(x.shape[1]):
        store_f16(out[0], 2 * i, x[0, i])


@overload(quantize_row, prefer_literal=True)
def _quantize_row(code, x, out):
    qtype = _qtype_of(code)
    # the float types' quantize_rows are numpy code; the block types' are jitted
    kernel = {F32: _store_f32_row, F16: _store_f16_row}.get(qtype.ggml_type, qtype.quantize_rows)
    return lambda code, x, out: kernel(x, out)


@njit(**_JIT)
def _store(code, K, V, blk, slot, k, v):
    """Write rows: K[blk[t], h, slot[t]] = k[t, h] (quantized), the same for V.   k, v: (T, H_kv, hd)"""
    for t in range(k.shape[0]):
        for h in range(k.shape[1]):
            quantize_row(code, k[t, h:h + 1], K[blk[t], h, slot[t]:slot[t] + 1])
            quantize_row(code, v[t, h:h + 1], V[blk[t], h, slot[t]:slot[t] + 1])


@njit(**_JIT)
def _gather(code, K, table, n_pos, out):
    """out[h, p] = the row at position p < n_pos of a sequence, dequantized.   out: (H_kv, n_pos, hd)"""
    bt = K.shape[2]
    for h in range(K.shape[1]):
        for p in range(n_pos):
            dequantize_row(code, K[table[p // bt], h, p % bt], out[h, p])


@njit(**_JIT)
def _heads_per_task(n_tok, n_kv, group, threads):
    """A task per (row, KV head), whose query heads share each cached row, wherever that gives every thread
    a task (up to 8: prefill, big batches, decode on few threads); otherwise a task per query head, so every
    thread has work. A head's sums are the same either way."""
    return group if n_tok * n_kv >= min(threads, 8) else 1


@njit(**_JIT)
def _task(job, n_tok, n_kv, group, per):
    """Task `job` -> (row t, KV head, first query head) for tasks of `per` query heads.

    Rows are taken from both ends in turn (0, T-1, 1, T-2, ...). A causal row's cost grows with its
    position and prange gives each thread one contiguous range of tasks, so in row order the last thread of a
    prompt chunk got the dearest rows: at two threads attention ran 1.4x faster than at one, not 2x."""
    slices = group // per
    r = job // (n_kv * slices)
    t = r // 2 if r % 2 == 0 else n_tok - 1 - r // 2
    kv = job % (n_kv * slices) // slices
    return t, kv, kv * group + job % slices * per


@njit(**_JIT)
def _first_position(n, window):
    """The first of n positions a query at position n - 1 sees: 0, or n - window for a sliding window
    (llama.cpp's standard SWA masks p when pos - p >= window)."""
    return max(0, n - window) if window > 0 else 0


@njit(**_JIT)
def _capped(score, cap):
    """gemma2's attention soft-cap: cap · tanh(score / cap); cap 0 leaves the score as it is."""
    return cap * np.tanh(score / cap) if cap > 0 else score


@njit(**_JIT)
def _softmax(sc):
    """In place, max-subtracted, as ggml's soft_max (AVX2) computes a row: exp by its vector expf
    (ops.exp_f32); each 8 values summed in float32 (simd.hsum, in the lane order of ggml's AVX2 sum), those
    sums and any tail added in float64; the row scaled by the float32 reciprocal. The first two loops
    vectorise."""
    best = np.float32(-np.inf)
    for p in range(sc.shape[0]):
        best = max(best, sc[p])
    for p in range(sc.shape[0]):
        sc[p] = exp_f32(sc[p] - best)
    total = 0.0
    p = 0
    while p + 8 <= sc.shape[0]:
        total += np.float64(hsum(load_f32x8(sc, p)))
        p += 8
    while p < sc.shape[0]:
        total += np.float64(sc[p])
        p += 1
    inv = np.float32(1.0 / total)
    for p in range(sc.shape[0]):
        sc[p] *= inv


@njit(**_JIT)
def _span(job, per, n_head, n_kv, tables, seq, pos, window):
    """What task `job` attends: its row t, KV head, first query head, the row's block table, and the
    positions first..n-1 it sees."""
    t, kv, h0 = _task(job, pos.shape[0], n_kv, n_head // n_kv, per)
    n = pos[t] + 1
    return t, kv, h0, tables[seq[t]], _first_position(n, window), n


@njit(**_JIT)
def attend_task(code, job, per, q, K, V, tables, seq, pos, scale, window, cap, qq, qd, qs, out):
    """Task `job` of _attend: `per` query heads of one row (see _task), over the cache of type `code`.

    Its scores and its heads' sums live in arrays of its own until the end (_private_rows). Kept in rows of
    shared arrays, written at every position beside rows other threads write, they made cache lines bounce
    between the cores: inside fused.py's region, decode at 1000 cached positions was no faster on two threads
    than on one."""
    hd, bt = q.shape[2], K.shape[2]
    t, kv, h0, table, first, n = _span(job, per, q.shape[1], K.shape[1], tables, seq, pos, window)
    for h in range(h0, h0 + per):
        if code == F16:  # llama.cpp multiplies an f16 cache by f16-rounded queries and weights
            for i in range(hd):
                q[t, h, i] = round_to_f16(q[t, h, i])
        quantize_activation(code, q[t, h], qq[t, h], qd[t, h], qs[t, h])
    sc, acc, row = _private_rows(per, n - first, hd)
    for p in range(first, n):
        k_row = K[table[p // bt], kv, p % bt]
        for j in range(per):
            h = h0 + j
            sc[j, p - first] = _capped(dot_row(code, k_row, q[t, h], qq[t, h], qd[t, h], qs[t, h]) * scale, cap)
    for j in range(per):
        _softmax(sc[j])
    for p in range(first, n):
        dequantize_row(code, V[table[p // bt], kv, p % bt], row)
        for j in range(per):
            _add_scaled(acc[j], round_to_f16(sc[j, p - first]) if code == F16 else sc[j, p - first], row)
    out[t, h0:h0 + per] = acc


@njit(**_JIT)
def _private_rows(per, n_pos, hd):
    """A task's scratch: scores (per, n_pos), its heads' output sums (per, hd) from zero, a value row (hd,)."""
    return np.empty((per, n_pos), np.float32), np.zeros((per, hd), np.float32), np.empty(hd, np.float32)


@njit(**_JIT)
def _dot_f32(a, b):
    """Σ a[i]·b[i] over two float32 rows in one fixed order: four 8-lane fused multiply-add accumulators over
    32-value steps (short dependency chains), then one of 8 values, added pairwise, the lanes summed, then
    any tail in order.   a, b: (n,)"""
    n = a.shape[0]
    acc0, acc1, acc2, acc3 = fzero(), fzero(), fzero(), fzero()
    i = 0
    while i + 32 <= n:
        acc0 = ffma(acc0, load_f32x8(a, i), load_f32x8(b, i))
        acc1 = ffma(acc1, load_f32x8(a, i + 8), load_f32x8(b, i + 8))
        acc2 = ffma(acc2, load_f32x8(a, i + 16), load_f32x8(b, i + 16))
        acc3 = ffma(acc3, load_f32x8(a, i + 24), load_f32x8(b, i + 24))
        i += 32
    while i + 8 <= n:
        acc0 = ffma(acc0, load_f32x8(a, i), load_f32x8(b, i))
        i += 8
    s = hsum(fadd(fadd(acc0, acc1), fadd(acc2, acc3)))
    while i < n:
        s = fma32(a[i], b[i], s)
        i += 1
    return s


@njit(**_JIT)
def _dots4_f32(a, B, r, out, o, scale, cap):
    """out[o + k] = _capped(_dot_f32(a, B[r + k]) * scale, cap) for k < 4: four rows' dots interleaved, each
    in _dot_f32's order (the same bits). One dot at a time waits on its own sum chain and lane sum (~40
    cycles a 64-value dot on the Xeon VM); four at once overlap them. SmolLM2's attention of a 256-row chunk
    at positions 1792-2047, one layer: 100-112 -> 60-64 ms at one thread, 51 -> 37 ms at two.
    a: (n,)   B: (rows, n)   out: (m,)"""
    n = a.shape[0]
    b0, b1, b2, b3 = B[r], B[r + 1], B[r + 2], B[r + 3]
    s00, s01, s02, s03 = fzero(), fzero(), fzero(), fzero()
    s10, s11, s12, s13 = fzero(), fzero(), fzero(), fzero()
    s20, s21, s22, s23 = fzero(), fzero(), fzero(), fzero()
    s30, s31, s32, s33 = fzero(), fzero(), fzero(), fzero()
    i = 0
    while i + 32 <= n:
        x0, x1, x2, x3 = load_f32x8(a, i), load_f32x8(a, i + 8), load_f32x8(a, i + 16), load_f32x8(a, i + 24)
        s00, s01 = ffma(s00, x0, load_f32x8(b0, i)), ffma(s01, x1, load_f32x8(b0, i + 8))
        s02, s03 = ffma(s02, x2, load_f32x8(b0, i + 16)), ffma(s03, x3, load_f32x8(b0, i + 24))
        s10, s11 = ffma(s10, x0, load_f32x8(b1, i)), ffma(s11, x1, load_f32x8(b1, i + 8))
        s12, s13 = ffma(s12, x2, load_f32x8(b1, i + 16)), ffma(s13, x3, load_f32x8(b1, i + 24))
        s20, s21 = ffma(s20, x0, load_f32x8(b2, i)), ffma(s21, x1, load_f32x8(b2, i + 8))
        s22, s23 = ffma(s22, x2, load_f32x8(b2, i + 16)), ffma(s23, x3, load_f32x8(b2, i + 24))
        s30, s31 = ffma(s30, x0, load_f32x8(b3, i)), ffma(s31, x1, load_f32x8(b3, i + 8))
        s32, s33 = ffma(s32, x2, load_f32x8(b3, i + 16)), ffma(s33, x3, load_f32x8(b3, i + 24))
        i += 32
    while i + 8 <= n:
        x0 = load_f32x8(a, i)
        s00, s10 = ffma(s00, x0, load_f32x8(b0, i)), ffma(s10, x0, load_f32x8(b1, i))
        s20, s30 = ffma(s20, x0, load_f32x8(b2, i)), ffma(s30, x0, load_f32x8(b3, i))
        i += 8
    t0 = hsum(fadd(fadd(s00, s01), fadd(s02, s03)))
    t1 = hsum(fadd(fadd(s10, s11), fadd(s12, s13)))
    t2 = hsum(fadd(fadd(s20, s21), fadd(s22, s23)))
    t3 = hsum(fadd(fadd(s30, s31), fadd(s32, s33)))
    while i < n:
        t0, t1 = fma32(a[i], b0[i], t0), fma32(a[i], b1[i], t1)
        t2, t3 = fma32(a[i], b2[i], t2), fma32(a[i], b3[i], t3)
        i += 1
    out[o], out[o + 1] = _capped(t0 * scale, cap), _capped(t1 * scale, cap)
    out[o + 2], out[o + 3] = _capped(t2 * scale, cap), _capped(t3 * scale, cap)


@njit(**_JIT)
def _add_scaled(out, w, row):
    """out += w · row, one fused multiply-add a value (LLVM vectorises the loop).   out, row: (n,)"""
    for i in range(out.shape[0]):
        out[i] = fma32(w, row[i], out[i])


@njit(**_JIT)
def _block_slots(blk, bt, first, n):
    """The slots lo..hi-1 of cache block blk (bt positions a block) that hold positions first..n-1; position
    blk·bt + s is the task's score index base + s."""
    base = blk * bt - first
    return base, max(-base, 0), min(n - blk * bt, bt)


@njit(**_JIT)
def attend_task_f32(job, per, q, K, V, tables, seq, pos, scale, window, cap, out):
    """Task `job` of _attend_f32: K, V read as float32 (blocks, H_kv, block_tokens, hd) straight from the
    cache by _dot_f32 and _add_scaled (the generic path's per-row dequantize and calls cost ~3x at decode);
    scores and sums private to the task as in attend_task."""
    bt = K.shape[2]
    t, kv, h0, table, first, n = _span(job, per, q.shape[1], K.shape[1], tables, seq, pos, window)
    sc, acc, _ = _private_rows(per, n - first, q.shape[2])
    for blk in range(first // bt, (n - 1) // bt + 1):  # block by block: no division per position
        Kb = K[table[blk], kv]  # (block_tokens, hd)
        base, lo, hi = _block_slots(blk, bt, first, n)
        for j in range(per):
            s = lo
            while s + 4 <= hi:
                _dots4_f32(q[t, h0 + j], Kb, s, sc[j], base + s, scale, cap)
                s += 4
            for rest in range(s, hi):
                sc[j, base + rest] = _capped(_dot_f32(q[t, h0 + j], Kb[rest]) * scale, cap)
    for j in range(per):
        _softmax(sc[j])
    for blk in range(first // bt, (n - 1) // bt + 1):
        Vb = V[table[blk], kv]
        base, lo, hi = _block_slots(blk, bt, first, n)
        for s in range(lo, hi):
            for j in range(per):
                _add_scaled(acc[j], sc[j, base + s], Vb[s])
    out[t, h0:h0 + per] = acc


@njit(parallel=True, **_JIT)
def _attend(code, q, K, V, tables, seq, pos, scale, window, cap, qq, qd, qs, out, threads):
    """Causal attention of T query rows, each over its own sequence's positions 0..pos[t], or only the last
    `window` of them (a sliding-window layer; 0 = all). cap > 0 soft-caps scores: cap · tanh(score / cap).

    q: (T, H, hd), rounded in place for an F16 cache   K, V: one layer's blocks
    tables: (B, max_blocks) int32   seq, pos: (T,)
    qq, qd, qs: the queries quantized as the key type's dot wants them (T, H, ...)
    out: (T, H, hd)   threads: numba's thread count (numba.get_num_threads() compiled in would keep this
    kernel out of the disk cache: it reads a ctypes pointer)
    Every head's sums run in position order, whatever T, the batch or the task split.
    """
    n_tok, n_head, _ = q.shape
    per = _heads_per_task(n_tok, K.shape[1], n_head // K.shape[1], threads)
    for job in prange(n_tok * n_head // per):
        attend_task(code, np.int64(job), per, q, K, V, tables, seq, pos, scale, window, cap, qq, qd, qs, out)
    return out


@njit(parallel=True, **_JIT)
def _attend_f32(q, K, V, tables, seq, pos, scale, window, cap, out, threads):
    """_attend for an F32 cache, K and V viewed as float32. Same task split."""
    n_tok, n_head, _ = q.shape
    per = _heads_per_task(n_tok, K.shape[1], n_head // K.shape[1], threads)
    for job in prange(n_tok * n_head // per):
        attend_task_f32(np.int64(job), per, q, K, V, tables, seq, pos, scale, window, cap, out)
    return out


store_rows = Specialized(_store)
gather_rows = Specialized(_gather)
attend_rows = Specialized(_attend)


def attend(code, q, K, V, tables, seq, pos, scale, window, cap, q_act, out):
    """Attention of every row (see _attend) through the kernel for the cache type `code`."""
    window, cap, threads = np.int64(window), np.float32(cap), np.int64(get_num_threads())
    if code == F32:
        return _attend_f32(q, K.view(np.float32), V.view(np.float32), tables, seq, pos, scale, window, cap, out,
                           threads)
    return attend_rows(code, q, K, V, tables, seq, pos, scale, window, cap, *q_act, out, threads)
