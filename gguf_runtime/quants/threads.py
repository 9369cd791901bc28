"""How many threads the parallel kernels use."""

from __future__ import annotations

import numba


def set_threads(n: int) -> int:
    """Use n threads (1 .. numba's NUMBA_NUM_THREADS, the machine's cores by default) in this Python thread's
    kernel calls; returns n."""
    limit = numba.config.NUMBA_NUM_THREADS
    if isinstance(n, bool) or not isinstance(n, (int,)) or not 1 <= n <= limit:
        raise ValueError(f"threads must be an integer from 1 to {limit}, got {n!r}")
    numba.set_num_threads(n)
    return n
