"""How many threads the kernels use, and which numba threading layer runs them.

`configure()` is part of gguf_runtime.runtime.setup(), which runs before the first parallel kernel: numba picks
its threading layer once, at the first launch of a parallel region, from NUMBA_THREADING_LAYER(_PRIORITY).
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from pathlib import Path
from typing import Callable

# numba's threading layer: the first of these that loads (an explicit NUMBA_THREADING_LAYER or
# NUMBA_THREADING_LAYER_PRIORITY wins). Measured 2026-11-27, SmolLM2 Q4_1 decode tok/s at 2 threads on the
# shared 2-core dev box, interleaved fresh processes (16-token prompt, then 48 greedy tokens, median of 3):
#                                      busy box (load 4.5-7.6)   quieter box (load 1.4-2.4)
#   omp, spinning (libgomp's default)   4.7-17, 4-8x the CPU      73-81
#   omp, GOMP_SPINCOUNT=20000           2.7-4.6                   24-88 (one run each side of a load spike)
#   omp, OMP_WAIT_POLICY=PASSIVE        24-39                     55-71
#   tbb (pip install tbb, not a dep)    20-49, the best median    63-72
#   workqueue                           17-32                     40-40
# A spinning thread waits at the barrier of each of ~200 parallel regions per token for a partner the OS has
# descheduled, so spinning collapses as soon as anything else wants the cores; passive waiting never
# collapsed but costs a lot on an idle machine. Re-measured on the idle box with the final code (scripts/bench.py,
# 2026-11-27): SmolLM2 decode 51.5 tok/s with OMP_WAIT_POLICY=ACTIVE vs 37.0 PASSIVE (llama.cpp 73-84), Qwen2.5-Coder-1.5B 13.2
# vs 11.8 (llama.cpp 14.4-15.2). A laptop running one model is the idle case, and llama.cpp spins too, so
# OpenMP keeps its default (spin a while, then sleep); OMP_WAIT_POLICY=PASSIVE suits a busy shared machine.
# Those figures predate the fused decode (fused.py: one region per run of layers, its threads held together
# by sync.barrier), which needs a layer that runs prange(n_threads)'s iterations at once; TBB may not, so under
# TBB decode takes the layer-by-layer path (11.1 against 8.7 ms per token at 2 threads here, README).
# Layers: OpenMP (GNU libgomp is always there on Linux; threadsafe, which workqueue is not: QMatrix keeps
# per-Python-thread scratch for callers running kernels from several threads, and workqueue aborts on concurrent
# launches), else tbb where the user installed it, else workqueue (macOS without libomp).
LAYER_PRIORITY = ("omp", "tbb", "workqueue")


def configure() -> None:
    """Set numba's threading layer order unless the environment chose it; BLAS on one thread."""
    single_threaded_blas()
    if "NUMBA_THREADING_LAYER" in os.environ or "NUMBA_THREADING_LAYER_PRIORITY" in os.environ:
        return
    os.environ["NUMBA_THREADING_LAYER_PRIORITY"] = " ".join(LAYER_PRIORITY)
    numba = sys.modules.get("numba")
    if numba is not None:  # imported before us: its config has read the environment already
        numba.config.THREADING_LAYER_PRIORITY = list(LAYER_PRIORITY)


def set_threads(n: int) -> int:
    """Use n threads (1 .. numba's NUMBA_NUM_THREADS, the machine's cores by default) in this Python thread's
    kernel calls; returns n."""
    import numba

    limit = numba.config.NUMBA_NUM_THREADS
    if isinstance(n, bool) or not isinstance(n, (int,)) or not 1 <= n <= limit:
        raise ValueError(f"threads must be an integer from 1 to {limit}, got {n!r}")
    numba.set_num_threads(n)
    return n


def single_threaded_blas() -> None:
    """numpy's bundled OpenBLAS on one thread. Its threads spin between calls and fight numba's for the cores:
    measured 2026-11-27 on the 2-core box at load ~3, a batch of 8 SmolLM2 prompts (1024 prefill tokens)
    took 52.6 s with 2 OpenBLAS threads and 9.3 s with one (prefill attention 96 ms -> 2.6 ms per call).
    The parallel work is numba's: every quantized matmul is the integer GEMM; BLAS is left with prefill
    attention and float weight tiles."""
    openblas = bundled_openblas_threads()
    if openblas is not None:
        openblas[0](1)


@functools.cache
def bundled_openblas_threads() -> tuple[Callable[[int], None], Callable[[], int]] | None:
    """(set, get) for the thread count of the OpenBLAS numpy's wheels bundle (numpy.libs/ or numpy/.dylibs/),
    found without importing anything new; None for other BLAS builds (Accelerate, MKL, a system library),
    which keep their own setting (OPENBLAS_NUM_THREADS and the like, read when numpy loads)."""
    import numpy

    package = Path(numpy.__file__).parent
    for folder in (package.parent / "numpy.libs", package / ".dylibs"):
        for path in sorted(folder.glob("*openblas*")):
            try:
                lib = ctypes.CDLL(str(path))  # already loaded by numpy: the same handle, nothing new runs
            except OSError:
                continue
            for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""), ("openblas", "64_"),
                                   ("openblas", "")):
                setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                if setter is not None and getter is not None:
                    setter.argtypes, setter.restype = [ctypes.c_int], None
                    getter.argtypes, getter.restype = [], ctypes.c_int
                    return setter, getter
    return None
