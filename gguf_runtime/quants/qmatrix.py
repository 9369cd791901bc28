"""QMatrix: y = W x on a weight matrix kept in its raw GGUF blocks (memory-mapped, never copied to float)."""

from __future__ import annotations

import threading
from typing import Sequence

import numba
import numpy as np

from . import kernels
from .registry import ACT_F32, F32, get_qtype
from .rows import as_rows

# Prefill strategy, by block size (`bench_kernels.py --crossover`): up to this many tokens the integer kernels
# (the GEMM from kernels.GEMM_MIN_TOKENS on) run with every token's activation; beyond it, tiles of rows are
# dequantized to float32 and multiplied with BLAS, which wins once the work is compute-bound (between 32 and
# 64 tokens on AVX2 for the blocks of 32, whose integer dot pays a float FMA per 32 values; float rows
# convert every weight in the row kernel and cross over sooner). The K-quants' integer GEMM (one FMA per 256
# values) matches or beats BLAS at every T, and keeps prefill on decode's numerics: those never take tiles.
INTEGER_PATH_MAX_TOKENS = {1: 8, 32: 32, 256: 16}
TILE_BYTES = 1 << 23  # float32 bytes per dequantized tile: big enough for BLAS, small enough for L3

# the array flags a compiled kernel's signature depends on (besides dtype and ndim): layout, alignment, writability
_KIND_FLAGS = 0x1 | 0x100 | 0x400  # NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_WRITEABLE
_scratch = threading.local()  # one tile buffer per Python thread, reused (fresh pages cost ~1 ms per 8 MB)


def _tile_buffer(n_floats: int) -> np.ndarray:
    buf = getattr(_scratch, "tile", None)
    if buf is None or buf.size < n_floats:
        buf = _scratch.tile = np.empty(n_floats, np.float32)
    return buf[:n_floats]


class QMatrix:
    """A weight matrix W of n_rows outputs x n_cols inputs (ggml ne = [n_cols, n_rows]) on raw blocks.

    `data` is the tensor as the GGUF reader gives it (2-D). Scratch buffers for one token's quantized
    activation live on the instance, so one QMatrix must not be used from two Python threads at once.
    """

    def __init__(self, data: np.ndarray, ggml_type: int, name: str = ""):
        self.qtype = get_qtype(ggml_type, name)
        if np.ndim(data) != 2:
            raise ValueError(f"tensor {name!r}: a QMatrix needs a 2-D tensor, got shape {np.shape(data)}")
        self.name = name
        self.ggml_type = self.qtype.ggml_type
        self.data = as_rows(data, self.qtype, name)
        self.n_rows = self.data.shape[0]
        self.n_cols = self.qtype.n_cols(self.data.shape[1])
        self._one_token = self._activation_scratch(1)
        self._entries: dict[tuple, object] = {}  # (kernel, input flags, output flags) -> compiled entry

    def __repr__(self) -> str:
        return f"QMatrix({self.name!r}, {self.qtype.name}, {self.n_rows}x{self.n_cols})"

    @property
    def nbytes(self) -> int:
        return self.data.nbytes

    def _activation_scratch(self, n_tokens: int):
        k = self.n_cols if self.qtype.activation != ACT_F32 else 0
        return (np.empty((n_tokens, k), np.int8), np.empty((n_tokens, k // 32), np.float32),
                np.empty((n_tokens, k // 16), np.int16))

    def _input(self, x: np.ndarray, ndim: int) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not x.flags.writeable:  # one array type per kernel argument: numba compiles each kernel once
            x = x.copy()
        if x.ndim != ndim or x.shape[-1] != self.n_cols:
            want = "(n_cols,)" if ndim == 1 else "(T, n_cols)"
            raise ValueError(f"{self!r}: input must be {want} with n_cols={self.n_cols}, got {x.shape}")
        return x

    def _output(self, out: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
        if out is None:
            return np.empty(shape, np.float32)
        if out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(f"{self!r}: out must be C-contiguous float32 {shape}, got {out.dtype} {out.shape}")
        return out

    def strategy(self, n_tokens: int, integer_only: bool = False) -> str:
        """The kernel X @ W.T takes for n_tokens rows: "rows" (the row kernels, every token per weight row),
        "panels" (the integer GEMM) or "tiled" (BLAS on dequantized tiles; never when integer_only)."""
        if integer_only or self.ggml_type in kernels.GEMM_TYPES or (
                n_tokens <= INTEGER_PATH_MAX_TOKENS[self.qtype.block_size] and self.ggml_type != F32):
            # The integer GEMM even where BLAS tiles would be a little faster on an idle machine (blocks of
            # 32 at 64+ tokens): BLAS runs on one thread here (threads.py: its spinning threads collapse
            # under load), and integer rows equal matvec bit for bit, so prefill, batched decode and
            # speculative verify all see the logits one-token decoding would.
            return "panels" if n_tokens >= kernels.GEMM_MIN_TOKENS.get(self.ggml_type, n_tokens + 1) else "rows"
        return "tiled"

    def _run(self, kernel: kernels.Specialized, X: np.ndarray, scratch: tuple, out: np.ndarray) -> None:
        """kernel(type, W, X, scratch..., out). The weights and scratch never change kind, so the compiled
        entry is looked up by the input's and output's flags alone: ~1 us instead of ~5 per call, and a decode
        step of a small model makes hundreds of these calls."""
        key = (kernel, X.flags.num & _KIND_FLAGS, out.flags.num & _KIND_FLAGS)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = kernel.entry(self.ggml_type, self.data, X, *scratch, out, 1)
        entry(self.ggml_type, self.data, X, *scratch, out, numba.get_num_threads())

    def matvec(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """W @ x for one token: x float32 (n_cols,) -> (n_rows,)."""
        x = self._input(x, 1)
        out = self._output(out, (self.n_rows,))
        self._run(kernels.matmul_rows, x[None], self._one_token, out[None])
        return out

    def matmul(self, X: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """X @ W.T for T tokens: X float32 (T, n_cols) -> (T, n_rows), by the faster strategy for T."""
        if self.strategy(np.shape(X)[0]) != "tiled":
            return self.matmul_integer(X, out)
        return self.matmul_tiled(X, out)

    def matmul_integer(self, X: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """X @ W.T with the integer dot-product kernels, each row bit-identical to matvec: one pass over W with
        every token per row, or for the types with an integer GEMM (kernels.GEMM_TYPES) and enough tokens,
        each weight row unpacked once per panel of tokens."""
        X = self._input(X, 2)
        out = self._output(out, (X.shape[0], self.n_rows))
        kernel = kernels.matmul_panels if self.strategy(X.shape[0], True) == "panels" else kernels.matmul_rows
        self._run(kernel, X, self._one_token if X.shape[0] == 1 else self._activation_scratch(X.shape[0]), out)
        return out

    def matmul_tiled(self, X: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """X @ W.T by BLAS on float32 tiles of rows dequantized in turn: W is read once, never copied whole.

        For quantized weights X is first rounded as the integer kernels (and llama.cpp, at every batch size)
        round activations, so the two strategies differ only in float summation order, not in what they
        multiply. It matters on outlier-heavy rows: without it Qwen2.5's first position changes its top token.
        """
        X = self._input(X, 2)
        out = self._output(out, (X.shape[0], self.n_rows))
        if self.ggml_type == F32:
            np.matmul(X, self.data.view(np.float32).T, out=out)
            return out
        if self.qtype.activation != ACT_F32:
            rounded = np.empty_like(X)
            kernels.rounded_activations(self.ggml_type, X, *self._activation_scratch(X.shape[0]), rounded)
            X = rounded
        rows_per_tile = max(16, min(self.n_rows, TILE_BYTES // (4 * self.n_cols)))
        tile = _tile_buffer(rows_per_tile * self.n_cols).reshape(rows_per_tile, self.n_cols)
        for r0 in range(0, self.n_rows, rows_per_tile):
            part = tile[:min(rows_per_tile, self.n_rows - r0)]
            kernels.dequantize_rows(self.ggml_type, self.data, np.arange(r0, r0 + part.shape[0], dtype=np.int64), part)
            out[:, r0:r0 + part.shape[0]] = X @ part.T
        return out


def matmul_many(mats: Sequence[QMatrix], X: np.ndarray, integer_only: bool = False) -> list[np.ndarray]:
    """[X @ W.T for W in mats] for matrices that read the same input (Q, K, V; gate, up), each result exactly
    what W.matmul(X) (or W.matmul_integer(X) with integer_only) gives.

    Where the row kernels serve (one token, a few decode tokens), matrices of one type run as one call of
    kernels.matmul_rows_group: one activation quantization and one parallel region for all of them, their
    rows split among the threads together. X: float32 (T, n_cols) -> [(T, W.n_rows)].
    """
    first = mats[0]
    X = first._input(X, 2)
    n_tok = X.shape[0]
    outs: list[np.ndarray | None] = [None] * len(mats)
    together: dict[int, list[int]] = {}  # ggml type -> the mats it runs for in one grouped call
    for i, m in enumerate(mats):
        if m.n_cols != first.n_cols:
            raise ValueError(f"matmul_many: {m!r} does not take {first!r}'s input width {first.n_cols}")
        if m.strategy(n_tok, integer_only) == "rows":
            together.setdefault(m.ggml_type, []).append(i)
        else:
            outs[i] = m.matmul_integer(X) if integer_only else m.matmul(X)
    for ggml_type, members in together.items():
        if len(members) == 1:
            outs[members[0]] = mats[members[0]].matmul_integer(X)
            continue
        group = [mats[i] for i in members]
        results = tuple(np.empty((n_tok, m.n_rows), np.float32) for m in group)
        scratch = group[0]._one_token if n_tok == 1 else group[0]._activation_scratch(n_tok)
        kernels.matmul_rows_group(ggml_type, tuple(m.data for m in group), X, *scratch, results,
                                  numba.get_num_threads())
        for i, y in zip(members, results):
            outs[i] = y
    return outs
