"""Process-wide setup, done once and explicitly: LLM() and the CLI call `setup()`; importing changes nothing.

What it sets, and why it is process-wide:
- numba's kernel cache folder (~/.cache/gguf-runtime/numba unless NUMBA_CACHE_DIR says otherwise), dropping
  compiled code from other kernel sources (numba checks only each defining file's timestamp; see
  quants/cachedir.py). numba forces one part earlier: the folder must be known when kernels are decorated, so
  importing gguf_runtime.quants sets NUMBA_CACHE_DIR's default (its docstring says so);
- numba's threading layer order (tbb, omp, workqueue; an explicit NUMBA_THREADING_LAYER(_PRIORITY) wins),
  which numba reads once, at the first parallel launch (quants/threads.py);
- numpy's bundled OpenBLAS on one thread, so its spinning threads do not fight numba's (quants/threads.py);
- numba loading cached machine code without first building its compiler's registries (quants/cachedir.py).

Kernel thread counts are not set here: n_threads belongs to an LLM, and its runner applies it to each forward
pass it runs (numba's count is per Python thread), so two LLMs in one process each get their own.
"""

from __future__ import annotations

_done = False


def setup() -> None:
    """Idempotent; call it before the first kernel runs (the first LLM() does)."""
    global _done
    if _done:
        return
    from .quants import cachedir, threads

    cachedir.configure()
    threads.configure()
    cachedir.load_cached_without_refresh()
    _done = True
