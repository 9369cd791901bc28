#!/usr/bin/env python3
"""What a numba parallel region costs, against a barrier inside one region (why fused.py exists).

For each thread count: an empty-ish `prange` called from Python, the same region launched 200 times from
compiled code, and 200 phases of one region separated by gguf_runtime.sync.barrier(). Run it under each
threading layer:

    for L in omp workqueue; do NUMBA_THREADING_LAYER=$L .venv/bin/python scripts/bench_regions.py 1 2 4 8 16; done

Measured on the lent 16-core box (2026-12-01): OpenMP 1.6-8 us per region (1-16 threads), workqueue 65-110 us,
the barrier 0.03-3 us with either.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numba
import numpy as np
from numba import njit, prange

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gguf_runtime.sync import barrier, new_barrier  # noqa: E402

PHASES = 200


@njit(parallel=True)
def one_region(x, n):
    for t in prange(n):
        x[8 * t] += 1.0


@njit(parallel=True)
def many_regions(x, n, k):
    for _ in range(k):
        for t in prange(n):
            x[8 * t] += 1.0


@njit(parallel=True)
def barrier_phases(x, n, k, state):
    for t in prange(n):
        for _ in range(k):
            x[8 * t] += 1.0
            barrier(state, n)


def per_call(f, *args, reps: int) -> float:
    f(*args)
    start = time.perf_counter()
    for _ in range(reps):
        f(*args)
    return (time.perf_counter() - start) / reps


def main() -> None:
    for n in [int(a) for a in sys.argv[1:]] or [1, 2]:
        numba.set_num_threads(n)
        x = np.zeros(8 * n)
        region = per_call(one_region, x, n, reps=200)
        inside = per_call(many_regions, x, n, PHASES, reps=20) / PHASES
        phase = per_call(lambda: barrier_phases(x, n, PHASES, new_barrier()), reps=20) / PHASES
        print(f"{numba.threading_layer()} threads={n}: region called from Python {region * 1e6:.1f} us, "
              f"from compiled code {inside * 1e6:.1f} us, barrier phase {phase * 1e6:.2f} us", flush=True)


if __name__ == "__main__":
    main()
