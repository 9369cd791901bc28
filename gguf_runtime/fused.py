"""Decode steps with one parallel region per run of layers, instead of one per matrix and per op.

A decode step of the op-by-op forward pass (model.py) starts and joins numba's threads ~200 times: 7
matmuls, attention and the K/V store per layer. That costs ~8 us a region with the OpenMP layer at 16 threads,
65-110 us with the workqueue layer (macOS), plus a Python call per op; it is why decode stopped scaling past
2-4 threads. Here every thread runs the whole layer loop, the steps separated by sync.barrier(), as
llama.cpp's threads run a graph:

    per thread, private: x (its own copy of the residual stream), the normed input and its quantization
    per layer:  [Q K V rows, split]  | [bias, QK-norm, RoPE, K/V store: (row, head) tasks]  |
                [attention tasks]  | [O rows]  | residual, FFN norm, [gate and up rows]  |
                [activation and its quantization, split by blocks]  | [down rows]  |  residual      (| = barrier)

The cheap row-wise steps (norms, residual adds, quantizing a D-wide input) are done by every thread on its
private copy: repeating D values costs less than a barrier. Every value is computed by the same functions
in the same order as model.py's path (the same row kernels, GEMM panels, attention tasks, norms and
activations), so the logits are bit-identical to it (tests/test_fused.py); only the task split differs.

It serves the batches whose every matmul runs the integer kernels (model.DECODE_NUMERICS_MAX_TOKENS rows per
sequence, up to SERVED_ROWS rows beyond two threads, where it is the faster path) on dense layers; prefill
chunks and mixture-of-experts layers take model.py's path. Layers run in groups of consecutive layers whose
matrices have the same types (one compiled kernel per combination of weight types, cached on disk), so a Q4_K_M
file with Q6_K rows in some layers makes a few calls per step and a uniform file one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from numba import njit, prange, typed, types
from numba.extending import overload

from . import quants as _quants  # noqa: F401  (sets NUMBA_CACHE_DIR before the first compile)
from .attention import _heads_per_task, attend_task, attend_task_f32, quantize_row
from .ops import ACTIVATIONS, gated, rms_norm, rope, table_for
from .quants.kernels import (GEMM_MIN_TOKENS, PANEL_BYTES, ROW_BLOCK_BYTES, _qtype_of, _row_block, panel, panel_scratch,
                             quantize_activation)
from .quants.registry import ACT_F32, ACT_Q8_K, F16, F32, Q8_0
from .sync import MASK_WORDS, barrier, borrowed, concurrent_layer, new_barrier, pin, placement, unpin

MAX_ROWS = 32  # rows per call: every thread keeps a private copy of the residual stream of each row
# Rows up to which this path is the faster one beyond two threads (model.py's layer-by-layer path computes the
# same values). On the 16-core Xeon, SmolLM2's shapes, one step of B decode rows, fused / layer by layer (ms,
# 2026-12-02): B=1 4.0 / 4.8 and B=2 6.2 / 6.8 at 16 threads, but B=8 19.7 / 14.4 and B=16 39.1 / 23.2 there,
# 24.1 / 19.1 and 45.0 / 25.7 at 8, 23.5 / 20.0 at 4; B=4 within 5 % at every count (why: not profiled; each
# thread keeps a private copy of every row's residual stream). At two threads it serves every batch up to
# MAX_ROWS: the 2-core Zen 4 VM ran B=8 at 72.8 fused / 80.7 ms layer by layer (the box: 34.4 / 32.1).
SERVED_ROWS = 4
# The cache types it attends over (the default f32, f16 and q8_0), chosen at run time inside the one compiled
# kernel per combination of weight types; the 4- and 5-bit caches (rarely worth it: README) take model.py's path.
FUSED_KV_TYPES = (F32, F16, Q8_0)
# fastmath off, and said so: numba compiles a callee that does not set fastmath with its caller's setting, so the
# kernels this calls (row kernels, GEMM panels, quantizers) keep the numerics they have when model.py calls them
_JIT = dict(cache=True, fastmath=False, nogil=True)


# ---------------------------------------------------------------------------------- per-type constants

def activation_block(code):
    """Values per scale of the activation type `code` multiplies: 256 (Q8_K), else 32."""
    raise NotImplementedError


def activation_width(code, n):
    """Length of the quantized copy of an n-wide activation for type `code` (0 for float weights)."""
    raise NotImplementedError


@overload(activation_block, prefer_literal=True)
def _activation_block(code):
    n = 256 if _qtype_of(code).activation == ACT_Q8_K else 32
    return lambda code: n


@overload(activation_width, prefer_literal=True)
def _activation_width(code, n):
    if _qtype_of(code).activation == ACT_F32:
        return lambda code, n: 0
    return lambda code, n: n


# ------------------------------------------------------------------------------------- the thread's work

@njit(**_JIT)
def _share(n, tid, threads):
    """Thread tid's contiguous share [lo, hi) of n items."""
    per = -(-n // threads)
    lo = min(n, tid * per)
    return lo, min(n, lo + per)


@njit(**_JIT)
def _row_kernels(code, W, X, scratch, out, r0, r1):
    """out[:, r0:r1] by the row kernels, in blocks of rows that stay in L2 while every token passes (as
    kernels._matmul_rows cuts them)."""
    xq, xd, xs = scratch
    step = max(1, ROW_BLOCK_BYTES // W.shape[1])
    for b0 in range(r0, r1, step):
        _row_block(code, W, X, xq, xd, xs, out, b0, min(r1, b0 + step))


@njit(**_JIT)
def _panels(code, W, X, scratch, out, r0, r1, pq, ps, pdm):
    """out[:, r0:r1] by the integer GEMM's panels (kernels._matmul_panels' blocks of rows and tokens)."""
    xq, xd, xs = scratch
    n_tok = X.shape[0]
    step = -(-max(1, ROW_BLOCK_BYTES // W.shape[1]) // 8) * 8  # whole groups of 8 (super-block panels)
    panel_tokens = max(2, PANEL_BYTES // xq.shape[1])
    for b0 in range(r0, r1, step):
        b1 = min(r1, b0 + step)
        for t0 in range(0, n_tok, panel_tokens):
            panel(code, W, xq, xd, xs, out, b0, b1, t0, min(n_tok, t0 + panel_tokens), pq, ps, pdm)


def _rows(code, W, X, scratch, out, r0, r1, pq, ps, pdm):
    """out[:, r0:r1] = X @ W[r0:r1].T with X's quantization (scratch) already made: the GEMM panels where
    QMatrix.matmul_integer takes them for this many tokens, else the row kernels. Jitted code only."""
    raise NotImplementedError


@overload(_rows, prefer_literal=True)
def _rows_of(code, W, X, scratch, out, r0, r1, pq, ps, pdm):
    ggml_type = _qtype_of(code).ggml_type
    if ggml_type not in GEMM_MIN_TOKENS:
        return lambda code, W, X, scratch, out, r0, r1, pq, ps, pdm: _row_kernels(code, W, X, scratch, out, r0, r1)
    min_tokens = GEMM_MIN_TOKENS[ggml_type]

    def impl(code, W, X, scratch, out, r0, r1, pq, ps, pdm):
        if X.shape[0] >= min_tokens:
            _panels(code, W, X, scratch, out, r0, r1, pq, ps, pdm)
        else:
            _row_kernels(code, W, X, scratch, out, r0, r1)
    return impl


@njit(**_JIT)
def _stacked_rows(code, W, X, scratch, out, base, g0, g1, pq, ps, pdm):
    """The rows of W (stacked at global row `base` with other matrices) inside the global range [g0, g1)."""
    r0, r1 = max(g0 - base, 0), min(g1 - base, W.shape[0])
    if r0 < r1:
        _rows(code, W, X, scratch, out, r0, r1, pq, ps, pdm)


@njit(**_JIT)
def _quantize(code, X, scratch):
    """X (T, n) quantized row by row for type `code` into scratch = (xq, xd, xs) (_act_scratch)."""
    xq, xd, xs = scratch
    for t in range(X.shape[0]):
        quantize_activation(code, X[t], xq[t], xd[t], xs[t])


@njit(**_JIT)
def _act_scratch(code, n_tok, n, shared):
    """Scratch for an (T, n) input quantized for type `code` (empty where float weights read the input
    itself, or where `shared`: another matrix's quantization of the same input serves)."""
    k = 0 if shared else activation_width(code, n)
    return np.empty((n_tok, k), np.int8), np.empty((n_tok, k // 32), np.float32), np.empty((n_tok, k // 16), np.int16)


@njit(**_JIT)
def _copy(src, dst):
    """dst = src for (T, n) arrays, as a loop (an array expression would bring numba's shape-error code)."""
    for t in range(src.shape[0]):
        for i in range(src.shape[1]):
            dst[t, i] = src[t, i]


@njit(**_JIT)
def _add(x, y):
    """x += y for (T, n) arrays (model.py's residual add), as a loop."""
    for t in range(x.shape[0]):
        for i in range(x.shape[1]):
            x[t, i] += y[t, i]


@njit(**_JIT)
def _normed(x, weight, eps, out):
    """out = RMSNorm(x) (model._normed), or a copy of x where the layer has no such norm (weight.size 0)."""
    if weight.shape[0] == 0:
        _copy(x, out)
    else:
        rms_norm(x, weight, eps, out)


@njit(**_JIT)
def _head(raw, bias, norm, eps, h, hd, tmp, out):
    """One head of a projected row: bias, QK-norm (per head, or over the whole row), as model.py applies
    them (y += bias, then RMSNorm per group).   raw: (n,) a row of Q or K; out: (hd,)"""
    n = raw.shape[0]
    whole = norm.shape[0] == n and n != hd
    lo, hi = (0, n) if whole else (h * hd, (h + 1) * hd)
    for i in range(lo, hi):
        tmp[0, i - lo] = raw[i] + bias[i] if bias.shape[0] else raw[i]
    row = tmp[:, :hi - lo]
    if norm.shape[0]:
        rms_norm(row, norm, eps, row)
    off = h * hd - lo
    for i in range(hd):
        out[i] = row[0, off + i]


@njit(**_JIT)
def _store_kv(code, k, v, k_out, v_out):
    """One head's key and value rows (1, hd) into the cache (attention.quantize_row), for a cache type given
    at run time (FUSED_KV_TYPES): it is not part of the kernel's specialisation, so every cache type shares
    the model's few compiled kernels."""
    if code == F32:
        quantize_row(F32, k, k_out)
        quantize_row(F32, v, v_out)
    elif code == F16:
        quantize_row(F16, k, k_out)
        quantize_row(F16, v, v_out)
    else:
        quantize_row(Q8_0, k, k_out)
        quantize_row(Q8_0, v, v_out)


@njit(**_JIT)
def _attend_kv(code, job, per, q, K, V, tables, seq, pos, scale, window, cap, qq, qd, qs, out):
    """Attention task `job` (attention.attend_task / attend_task_f32) for a cache type given at run time."""
    if code == F32:
        attend_task_f32(job, per, q, K.view(np.float32), V.view(np.float32), tables, seq, pos, scale, window, cap, out)
    elif code == F16:
        attend_task(F16, job, per, q, K, V, tables, seq, pos, scale, window, cap, qq, qd, qs, out)
    else:
        attend_task(Q8_0, job, per, q, K, V, tables, seq, pos, scale, window, cap, qq, qd, qs, out)


@njit(parallel=True, **_JIT)
def _layers(cq, ck, cv, co, cg, cu, cd, cout, ckv, act, gelu,
            l0, l1, x, attn_norm, wq, wk, wv, bq, bk, bv, q_norm, k_norm, wo, post_attn_norm, ffn_norm,
            wg, wu, wd, post_ffn_norm, K, V, windows, rope_of, cos, sin, neox,
            group_of, tables, seq, pos, blk, slot, eps, scale, cap, n_head, hd, threads, sync, cpus,
            out_norm, w_out, out_rows, logits):
    """Layers l0..l1-1 of the model over T rows, x (T, D) updated in place. c*: the literal ggml types of
    Q, K, V, O, gate, up, down and the vocabulary projection; ckv: the KV cache's type (one of FUSED_KV_TYPES); act: 0 SwiGLU, 1 GeGLU (gelu: ops.table_for's table). Per-layer lists (typed.List,
    indexed by layer): norms and biases (size 0 where absent), weight rows, K/V blocks. cos, sin: (n_ropes,
    T, n_rot/2); rope_of, windows, group_of (its KV pool group): per layer. The batch as ForwardBatch, with
    each group's rows stacked: tables (G, B, max blocks), blk, slot (G, T). cpus: sync.placement()'s masks
    (each thread stays on its CPU for the call, and is then put back) or an empty array. out_rows: the rows
    of x whose logits (len(out_rows), V) the call computes after its last layer (model.py's output norm and
    projection), or none."""
    n_tok, d = x.shape
    n_kv = wk[l0].shape[0] // hd
    n_ff = wg[l0].shape[0]
    # shared between the threads
    q_raw = np.empty((n_tok, n_head * hd), np.float32)  # (T, H·hd) Q rows as projected
    k_raw = np.empty((n_tok, n_kv * hd), np.float32)  # (T, H_kv·hd)
    v_raw = np.empty((n_tok, n_kv * hd), np.float32)  # (T, H_kv·hd)
    q = np.empty((n_tok, n_head, hd), np.float32)  # (T, H, hd) biased, normed, rotated
    k = np.empty((n_tok, n_kv, hd), np.float32)  # (T, H_kv, hd)
    v = np.empty((n_tok, n_kv, hd), np.float32)  # (T, H_kv, hd)
    attn = np.empty((n_tok, n_head, hd), np.float32)  # (T, H, hd)
    o = np.empty((n_tok, d), np.float32)  # (T, D) O and down projections
    gate = np.empty((n_tok, n_ff), np.float32)  # (T, F)
    up = np.empty((n_tok, n_ff), np.float32)  # (T, F)
    hidden = np.empty((n_tok, n_ff), np.float32)  # (T, F) act(gate) · up
    n_down = activation_width(cd, n_ff)
    hq = np.empty((n_tok, n_down), np.int8)  # its quantization for the down projection
    hdd = np.empty((n_tok, n_down // 32), np.float32)
    hs = np.empty((n_tok, n_down // 16), np.int16)
    n_act = hd if ckv == Q8_0 else 0  # queries quantized as the cache type's dot wants them
    qq = np.empty((n_tok, n_head, n_act), np.int8)
    qd = np.empty((n_tok, n_head, n_act // 32), np.float32)
    qs = np.empty((n_tok, n_head, n_act // 16), np.int16)
    shared = (q_raw, k_raw, v_raw, q, k, v, attn, o, gate, up, hidden, hq, hdd, hs, qq, qd, qs)
    saved = np.empty((threads, MASK_WORDS), np.uint64)  # each thread's own CPU set while it is pinned
    for me in prange(threads):  # one thread each: the work is split inside, between barriers
        pinned = pin(cpus, me, saved[me])
        _thread(cq, ck, cv, co, cg, cu, cd, cout, ckv, act, gelu, np.int64(me), shared,
                l0, l1, x, attn_norm, wq, wk, wv, bq, bk, bv, q_norm, k_norm, wo, post_attn_norm, ffn_norm,
                wg, wu, wd, post_ffn_norm, K, V, windows, rope_of, cos, sin, neox,
                group_of, tables, seq, pos, blk, slot, eps, scale, cap, n_head, hd, threads, sync,
                out_norm, w_out, out_rows, logits)
        if pinned:
            unpin(saved[me])


@njit(**_JIT)
def _thread(cq, ck, cv, co, cg, cu, cd, cout, ckv, act, gelu, tid, shared,
            l0, l1, x, attn_norm, wq, wk, wv, bq, bk, bv, q_norm, k_norm, wo, post_attn_norm, ffn_norm,
            wg, wu, wd, post_ffn_norm, K, V, windows, rope_of, cos, sin, neox,
            group_of, tables, seq, pos, blk, slot, eps, scale, cap, n_head, hd, threads, sync,
            out_norm, w_out, out_rows, logits):
    """Thread tid's part of _layers: its private copy of the residual stream through layers l0..l1-1, its
    share of each step's work, a barrier after every step whose results other threads read."""
    # borrowed (sync.borrowed): every thread slices these, and a view of an array with a reference count costs
    # two atomic operations on its shared cache line (per weight row, per cached position)
    q_raw, k_raw, v_raw = borrowed(shared[0]), borrowed(shared[1]), borrowed(shared[2])
    q, k, v = borrowed(shared[3]), borrowed(shared[4]), borrowed(shared[5])
    attn, o = borrowed(shared[6]), borrowed(shared[7])
    gate, up, hidden = borrowed(shared[8]), borrowed(shared[9]), borrowed(shared[10])
    hq, hdd, hs = borrowed(shared[11]), borrowed(shared[12]), borrowed(shared[13])
    qq, qd, qs = borrowed(shared[14]), borrowed(shared[15]), borrowed(shared[16])
    n_tok, d = x.shape
    n_kv = wk[l0].shape[0] // hd
    n_ff = wg[l0].shape[0]
    width = max(d, n_head * hd, n_ff)  # the widest input a matmul takes
    n_down = hq.shape[1]
    per = _heads_per_task(n_tok, n_kv, n_head // n_kv, threads)
    n_qkv = (n_head + 2 * n_kv) * hd
    none = np.zeros(0, np.float32)
    xp = np.empty((n_tok, d), np.float32)  # (T, D) this thread's residual stream
    _copy(x, xp)
    a = np.empty((n_tok, d), np.float32)  # (T, D) normed input of a sublayer
    post = np.empty((n_tok, d), np.float32)  # (T, D) a post-norm's output
    # each matrix's input quantized for its type; a matrix whose type takes the same activation as the
    # one before it reuses that one's
    sq = _act_scratch(cq, n_tok, d, False)
    sk = _act_scratch(ck, n_tok, d, ck == cq)
    sv = _act_scratch(cv, n_tok, d, cv == cq or cv == ck)
    so = _act_scratch(co, n_tok, n_head * hd, False)
    sg = _act_scratch(cg, n_tok, d, False)
    su = _act_scratch(cu, n_tok, d, cu == cg)
    pq, ps, pdm = panel_scratch(width, n_tok)  # weights unpacked by the GEMM panels
    tmp = np.empty((1, n_head * hd), np.float32)
    for layer in range(l0, l1):
        r, grp = rope_of[layer], group_of[layer]
        Kl, Vl = borrowed(K[layer]), borrowed(V[layer])  # this layer's cache blocks
        # Q, K, V
        _normed(xp, attn_norm[layer], eps, a)
        _quantize(cq, a, sq)
        if ck != cq:
            _quantize(ck, a, sk)
        if cv != cq and cv != ck:
            _quantize(cv, a, sv)
        xk = sq if ck == cq else sk
        xv = sq if cv == cq else (sk if cv == ck else sv)
        g0, g1 = _share(n_qkv, tid, threads)
        _stacked_rows(cq, borrowed(wq[layer]), a, sq, q_raw, 0, g0, g1, pq, ps, pdm)
        _stacked_rows(ck, borrowed(wk[layer]), a, xk, k_raw, n_head * hd, g0, g1, pq, ps, pdm)
        _stacked_rows(cv, borrowed(wv[layer]), a, xv, v_raw, (n_head + n_kv) * hd, g0, g1, pq, ps, pdm)
        barrier(sync, threads)
        # bias, QK-norm, RoPE of each head; keys and values into the cache
        for job in range(tid, n_tok * (n_head + n_kv), threads):
            t, h = job // (n_head + n_kv), job % (n_head + n_kv)
            if h < n_head:
                _head(q_raw[t], bq[layer], q_norm[layer], eps, h, hd, tmp, q[t, h])
                rope(q[t:t + 1, h:h + 1], cos[r, t:t + 1], sin[r, t:t + 1], neox)
            else:
                h -= n_head
                _head(k_raw[t], bk[layer], k_norm[layer], eps, h, hd, tmp, k[t, h])
                rope(k[t:t + 1, h:h + 1], cos[r, t:t + 1], sin[r, t:t + 1], neox)
                _head(v_raw[t], bv[layer], none, eps, h, hd, tmp, v[t, h])
                _store_kv(ckv, k[t, h:h + 1], v[t, h:h + 1], Kl[blk[grp, t], h, slot[grp, t]:slot[grp, t] + 1],
                          Vl[blk[grp, t], h, slot[grp, t]:slot[grp, t] + 1])
        barrier(sync, threads)
        for job in range(tid, n_tok * n_head // per, threads):
            _attend_kv(ckv, job, per, q, Kl, Vl, tables[grp], seq, pos, scale, windows[layer], cap,
                       qq, qd, qs, attn)
        barrier(sync, threads)
        # output projection, residual
        flat = attn.reshape(n_tok, n_head * hd)
        _quantize(co, flat, so)
        r0, r1 = _share(d, tid, threads)
        _rows(co, borrowed(wo[layer]), flat, so, o, r0, r1, pq, ps, pdm)
        barrier(sync, threads)
        _normed(o, post_attn_norm[layer], eps, post)
        _add(xp, post)
        # feed-forward: down(act(gate) · up)
        _normed(xp, ffn_norm[layer], eps, a)
        _quantize(cg, a, sg)
        if cu != cg:
            _quantize(cu, a, su)
        xu = sg if cu == cg else su
        g0, g1 = _share(2 * n_ff, tid, threads)
        _stacked_rows(cg, borrowed(wg[layer]), a, sg, gate, 0, g0, g1, pq, ps, pdm)
        _stacked_rows(cu, borrowed(wu[layer]), a, xu, up, n_ff, g0, g1, pq, ps, pdm)
        barrier(sync, threads)
        block = activation_block(cd)
        b0, b1 = _share(-(-n_ff // block), tid, threads)
        c0, c1 = b0 * block, min(n_ff, b1 * block)
        if c0 < c1:
            gated(act, gate, up, hidden, c0, c1, gelu)
            if n_down:
                for t in range(n_tok):
                    quantize_activation(cd, hidden[t][c0:c1], hq[t][c0:c1], hdd[t][c0 // block:c1 // block],
                                        hs[t][c0 // 16:c1 // 16])
        barrier(sync, threads)
        _rows(cd, borrowed(wd[layer]), hidden, (hq, hdd, hs), o, r0, r1, pq, ps, pdm)
        barrier(sync, threads)
        _normed(o, post_ffn_norm[layer], eps, post)
        _add(xp, post)
    if tid == 0:
        _copy(xp, x)
    n_out = out_rows.shape[0]
    if n_out:  # the logits: every thread norms the rows itself, then projects its share of the vocabulary
        h = np.empty((n_out, d), np.float32)  # (R, D)
        for i in range(n_out):
            rms_norm(xp[out_rows[i]:out_rows[i] + 1], out_norm, eps, h[i:i + 1])
        s_out = _act_scratch(cout, n_out, d, False)
        _quantize(cout, h, s_out)
        v0, v1 = _share(w_out.shape[0], tid, threads)
        _rows(cout, w_out, h, s_out, logits, v0, v1, pq, ps, pdm)


# ------------------------------------------------------------------------------------------ the caller

def _frozen(a: np.ndarray | None) -> np.ndarray:
    """A read-only float32 view (an empty one for an absent tensor): one array type for every list entry."""
    v = (np.zeros(0, np.float32) if a is None else np.ascontiguousarray(a, dtype=np.float32)).view()
    v.flags.writeable = False
    return v


def _rows_view(m) -> np.ndarray:
    v = m.data.view()
    v.flags.writeable = False
    return v


@njit(cache=True, fastmath=False)
def _typed_list(items):
    out = typed.List()
    for item in items:
        out.append(item)
    return out


def _list(items) -> typed.List:
    """A numba typed List of the arrays (one array type), built by compiled code cached on disk: built from
    Python, each list type would compile its methods again in every process (~0.4 s at start-up)."""
    return _typed_list(tuple(items))


@dataclass
class _Group:
    first: int
    end: int
    codes: tuple[int, ...]  # ggml types of Q, K, V, O, gate, up, down


class FusedLayers:
    """The model's dense layers as the lists _layers reads, grouped by the types of their matrices."""

    def __init__(self, model):
        c = model.config
        L = model.layers
        self.eligible = c.n_expert == 0
        self.max_rows = SERVED_ROWS  # beyond two threads (tests raise it to MAX_ROWS to compare the paths)
        self.act = ACTIVATIONS.get(c.spec.activation, -1)
        self.gelu = table_for(c.spec.activation)
        if not self.eligible or self.act < 0:
            self.eligible = False
            return
        self.n_head, self.head_dim = c.n_heads, c.head_dim
        self.eps, self.scale, self.cap = np.float32(c.rms_eps), np.float32(c.attn_scale), np.float32(c.attn_softcap)
        self.neox = c.rope_style == "neox"
        self.windows = np.array([layer.window for layer in L], np.int64)
        self.rope_of = np.array([layer.rope for layer in L], np.int64)
        self.lists = tuple(_list(f(layer) for layer in L) for f in (
            lambda l: _frozen(l.attn_norm), lambda l: _rows_view(l.wq), lambda l: _rows_view(l.wk),
            lambda l: _rows_view(l.wv), lambda l: _frozen(l.bq), lambda l: _frozen(l.bk), lambda l: _frozen(l.bv),
            lambda l: _frozen(l.q_norm), lambda l: _frozen(l.k_norm), lambda l: _rows_view(l.wo),
            lambda l: _frozen(l.post_attn_norm), lambda l: _frozen(l.ffn_norm), lambda l: _rows_view(l.w_gate),
            lambda l: _rows_view(l.w_up), lambda l: _rows_view(l.w_down), lambda l: _frozen(l.post_ffn_norm)))
        self.groups: list[_Group] = []
        for i, layer in enumerate(L):
            codes = tuple(m.ggml_type for m in (layer.wq, layer.wk, layer.wv, layer.wo, layer.w_gate, layer.w_up,
                                                layer.w_down))
            if self.groups and self.groups[-1].codes == codes:
                self.groups[-1].end = i + 1
            else:
                self.groups.append(_Group(i, i + 1, codes))
        self.out_norm, self.w_out = _frozen(model.output_norm), _rows_view(model.output)
        self.out_code = model.output.ggml_type
        self._pool = None
        self._entries: dict[tuple, object] = {}
        self._sync = new_barrier()
        self._placements: dict[int, np.ndarray] = {}

    def serves(self, n_rows: int, decode: bool, n_threads: int, pool_code: int = F32) -> bool:
        """Whether a batch of n_rows rows takes this path: dense layers, decode numerics, a FUSED_KV_TYPES
        cache, and threads that barrier() can hold together (numba's layer runs prange iterations at once, or
        one thread)."""
        most = self.max_rows if n_threads > 2 else MAX_ROWS
        return (self.eligible and decode and n_rows <= most and pool_code in FUSED_KV_TYPES
                and (n_threads == 1 or concurrent_layer()))

    def _pool_lists(self, pool):
        if self._pool is not pool:  # each layer's blocks, as one list per K and V, and its group
            layers = [pool.layer(i) for i in range(len(self.windows))]
            self._kv = (_list(k for _, k, _ in layers), _list(v for _, _, v in layers),
                        np.array([g for g, _, _ in layers], np.int64))
            self._pool = pool
        return self._kv

    def run(self, x: np.ndarray, batch, cos: np.ndarray, sin: np.ndarray,
            out_rows: np.ndarray | None = None) -> np.ndarray | None:
        """Every layer over the batch's rows; x (T, D) float32 is the residual stream, updated in place.
        cos, sin: (n_ropes, T, n_rot/2), the model's RoPE tables at the rows' positions. With out_rows (row
        indices of x), also the logits of those rows, (R, V) float32, in the same call (one region a step
        instead of two), as model.py computes them: RMSNorm by the output norm, then the projection."""
        K, V, group_of = self._pool_lists(batch.pool)
        threads = numba.get_num_threads()
        cpus = self._placements.get(threads)
        if cpus is None:
            cpus = self._placements[threads] = placement(threads)
        pos = np.ascontiguousarray(batch.positions, dtype=np.int64)
        rows = batch.groups
        width = max(r.tables.shape[1] for r in rows)
        tables = np.zeros((len(rows), rows[0].tables.shape[0], width), np.int32)  # (G, B, max blocks)
        for g, r in enumerate(rows):
            tables[g, :, :r.tables.shape[1]] = r.tables
        blk = np.stack([r.blocks.astype(np.int32) for r in rows])  # (G, T)
        slot = np.stack([r.slots.astype(np.int64) for r in rows])  # (G, T)
        no_rows, no_logits = np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        logits = None
        if out_rows is not None:
            out_rows = np.ascontiguousarray(out_rows, dtype=np.int64)
            logits = np.empty((len(out_rows), self.w_out.shape[0]), np.float32)  # (R, V)
        for g in self.groups:
            last = g is self.groups[-1] and logits is not None
            args = (np.int64(g.first), np.int64(g.end), x, *self.lists[:9], *self.lists[9:], K, V,
                    self.windows, self.rope_of, cos, sin, self.neox, group_of, tables, batch.seq, pos,
                    blk, slot, self.eps, self.scale, self.cap, np.int64(self.n_head),
                    np.int64(self.head_dim), np.int64(threads), self._sync, cpus, self.out_norm, self.w_out,
                    out_rows if last else no_rows, logits if last else no_logits)
            literals, kv_act = (*g.codes, self.out_code), (np.int64(batch.pool.code), np.int64(self.act), self.gelu)
            entry = self._entries.get(literals)
            if entry is None:
                sig = (*(types.literal(v) for v in literals), *(numba.typeof(a) for a in (*kv_act, *args)))
                _layers.compile(sig)
                entry = self._entries[literals] = _layers.overloads[sig].entry_point
            entry(*literals, *kv_act, *args)
        return logits
