"""A barrier for the threads of one numba parallel region, so a whole decode layer runs as one region.

numba starts and joins its threads at every `prange`: ~8 us per region with the OpenMP layer at 16 threads,
and 65-110 us with the workqueue layer (the one macOS gets), measured on the lent 16-core box
(`scripts/bench_threads.py`'s machine, 2026-12-01). A decode step of ~200 regions paid that ~200 times. Inside
one region over `prange(n_threads)` the threads instead meet at `barrier()` between the steps of a layer,
as llama.cpp's threads do between graph nodes: ~1-3 us at 16 threads.

That only works when every iteration of the `prange` runs at the same time on its own thread, which numba's
OpenMP and workqueue layers do for `n_threads` iterations (one chunk per thread); TBB may run two on one
thread one after the other, and would wait forever, so callers check `concurrent_layer()` first.
A waiting thread spins on the pause hint, then yields its core: on a loaded machine the thread it waits for
may be descheduled, and pure spinning would keep it off the core.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .quants.simd import _AARCH64, _X86

SPINS_BEFORE_YIELD = 1 << 12  # ~0.1-0.3 ms of pause hints, then sched_yield between polls
BARRIER_WORDS = 16  # an int64 array: the arrival count at [0], the generation at [8] (another cache line)


@intrinsic
def _atomic_add(typingctx, arr, idx, val):
    """arr[idx] += val atomically (sequentially consistent); returns the old value.   arr: int64 1-D"""
    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = builder.gep(ary.data, [args[1]])
        return builder.atomic_rmw("add", ptr, context.cast(builder, args[2], sig.args[2], types.int64), "seq_cst")
    return types.int64(arr, idx, val), codegen


@intrinsic
def _atomic_load(typingctx, arr, idx):
    """arr[idx], read atomically (sequentially consistent).   arr: int64 1-D"""
    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        return builder.load_atomic(builder.gep(ary.data, [args[1]]), "seq_cst", 8)
    return types.int64(arr, idx), codegen


@intrinsic
def _atomic_store(typingctx, arr, idx, val):
    """arr[idx] = val atomically (sequentially consistent).   arr: int64 1-D"""
    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        value = context.cast(builder, args[2], sig.args[2], types.int64)
        builder.store_atomic(value, builder.gep(ary.data, [args[1]]), "seq_cst", 8)
        return context.get_dummy_value()
    return types.none(arr, idx, val), codegen


@intrinsic
def _pause(typingctx):
    """The spin-wait hint: x86 `pause`, AArch64 `yield`; nothing elsewhere."""
    def codegen(context, builder, sig, args):
        if _X86:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                "llvm.x86.sse2.pause")
            builder.call(fn, [])
        elif _AARCH64:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [ir.IntType(32)]),
                                                "llvm.aarch64.hint")
            builder.call(fn, [ir.Constant(ir.IntType(32), 1)])
        return context.get_dummy_value()
    return types.none(), codegen


@intrinsic
def _sched_yield(typingctx):
    """POSIX sched_yield(): give the core to another runnable thread. Linked by name, so kernels stay cacheable."""
    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
        builder.call(fn, [])
        return context.get_dummy_value()
    return types.none(), codegen


def new_barrier() -> np.ndarray:
    return np.zeros(BARRIER_WORDS, np.int64)


@njit(cache=True, fastmath=False)
def barrier(state, n_threads):
    """Wait until all n_threads threads of the region have called barrier() with this state, then return
    in every one of them. What a thread wrote before it arrived is visible to all after they leave."""
    if n_threads <= 1:
        return
    generation = _atomic_load(state, 8)
    if _atomic_add(state, 0, 1) == n_threads - 1:  # the last to arrive opens the next generation
        _atomic_store(state, 0, 0)
        _atomic_add(state, 8, 1)
        return
    spins = 0
    while _atomic_load(state, 8) == generation:
        if spins < SPINS_BEFORE_YIELD:
            spins += 1
            _pause()
        else:
            _sched_yield()


def concurrent_layer() -> bool:
    """Whether numba's threading layer runs the n iterations of prange(n_threads) at once, one per thread
    (OpenMP, workqueue), as barrier() needs. Asked after the layer is chosen (the first parallel launch)."""
    import numba

    try:
        return numba.threading_layer() in ("omp", "workqueue")
    except ValueError:  # no parallel region has run yet: the layer is not chosen
        return False
