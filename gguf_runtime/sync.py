"""A barrier for the threads of one numba parallel region, so a whole decode layer runs as one region.

numba starts and joins its threads at every `prange`: ~8 us per region with the OpenMP layer at 16 threads,
and 65-110 us with the workqueue layer (the one macOS gets), measured on the lent 16-core box
(`scripts/bench_threads.py`'s machine, 2026-12-01). A decode step of ~200 regions paid that ~200 times. Inside
one region over `prange(n_threads)` the threads instead meet at `barrier()` between the steps of a layer,
as llama.cpp's threads do between graph nodes: ~1-3 us at 16 threads.

That only works when every iteration of the `prange` runs at the same time on its own thread, which numba's
OpenMP and workqueue layers do for `n_threads` iterations (one chunk per thread); TBB may run two on one
thread one after the other, and would wait forever, so callers check `concurrent_layer()` first.
A waiting thread spins on the pause hint, then sleeps (Linux: a futex on the generation word, woken by the last
to arrive; elsewhere it yields its core between polls). Sleeping is what keeps the threads on cores of their
own: the OS may wake two of numba's workqueue threads onto one core (and leave the other idle for several
milliseconds: a thread that just ran is not migrated), and two threads yielding to each other there ran a
decode step at a third of its speed; a sleeping thread gives the core to the other, and when it is woken the OS
places it on an idle core. With OpenMP (whose workers spin between regions) it rarely happens.
"""

from __future__ import annotations

import platform
import sys

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

from .quants.simd import _AARCH64, _X86

SPINS_BEFORE_SLEEP = 1 << 12  # ~0.1-0.3 ms of pause hints, then sleep (or sched_yield between polls)
# an int64 array: the arrival count at [0], the generation at [8], the number of sleepers at [16] (each on a
# cache line of its own); a sleeper waits on the generation's low 32 bits (both targets are little-endian)
BARRIER_WORDS = 24
# Linux's futex syscall number where we know it (None: no futex, waiting threads yield instead)
_SYS_FUTEX = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98}.get(platform.machine().lower()) \
    if sys.platform.startswith("linux") else None
_FUTEX_WAIT_PRIVATE, _FUTEX_WAKE_PRIVATE = 128, 129
_WAKE_ALL = (1 << 31) - 1


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


@intrinsic
def _futex(typingctx, arr, idx, op, val):
    """Linux syscall(SYS_futex, low 32 bits of &arr[idx], op, val, NULL); nothing where there is no futex.
    FUTEX_WAIT sleeps while that word equals val (it may return early: callers re-check); FUTEX_WAKE wakes up
    to val sleepers. Linked by name (libc's `syscall`), so kernels stay cacheable.   arr: int64 1-D"""
    def codegen(context, builder, sig, args):
        if _SYS_FUTEX is None:
            return context.get_dummy_value()
        i64 = ir.IntType(64)
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        word = builder.ptrtoint(builder.gep(ary.data, [args[1]]), i64)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i64, [i64], var_arg=True), "syscall")
        builder.call(fn, [i64(_SYS_FUTEX), word, context.cast(builder, args[2], sig.args[2], types.int64),
                          builder.and_(context.cast(builder, args[3], sig.args[3], types.int64), i64(0xFFFFFFFF)),
                          i64(0)])
        return context.get_dummy_value()
    return types.none(arr, idx, op, val), codegen


@njit(cache=True, fastmath=False)
def _sleep_while(state, generation):
    """Sleep until the generation moves on (or the futex returns early; the caller re-checks). The sleeper count
    tells the last thread to arrive that a wake-up is needed; either it sees the count or the sleeper sees the
    new generation (both sequentially consistent), so no wake-up is lost."""
    if _SYS_FUTEX is None:
        _sched_yield()
        return
    _atomic_add(state, 16, 1)
    if _atomic_load(state, 8) == generation:
        _futex(state, 8, _FUTEX_WAIT_PRIVATE, generation)
    _atomic_add(state, 16, -1)


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
        if _atomic_load(state, 16) > 0:
            _futex(state, 8, _FUTEX_WAKE_PRIVATE, _WAKE_ALL)
        return
    spins = 0
    while _atomic_load(state, 8) == generation:
        if spins < SPINS_BEFORE_SLEEP:
            spins += 1
            _pause()
        else:
            _sleep_while(state, generation)


# ------------------------------------------------------------------------------------- shared arrays

@intrinsic
def borrowed(typingctx, arr):
    """arr as a borrowed reference (no meminfo), for arrays many threads slice at once inside one region.

    Every view numba takes of an array (a weight row, a cached key row) adds to and subtracts from its
    meminfo's reference count with atomic instructions. Arrays a parallel region receives as arguments come
    without one, but those read out of a typed List inside it (fused.py's per-layer weights and K/V blocks)
    keep theirs, and then every thread's every row view is two atomic operations on one shared cache line.
    With attention's scratch private to each task (attention.attend_task) as well, SmolLM2 decode at 1000
    cached positions on 2 threads went from 19-20 to 12.1 ms a step (2026-12-02, this 2-core VM).
    The caller keeps the array alive (the list holds it) while the borrowed one is used."""
    if not isinstance(arr, types.Array):
        raise TypingError(f"borrowed: expected an array, got {arr}")

    def codegen(context, builder, sig, args):
        src = context.make_array(sig.args[0])(context, builder, args[0])
        out = context.make_array(sig.return_type)(context, builder)
        for field in ("parent", "nitems", "itemsize", "data", "shape", "strides"):
            setattr(out, field, getattr(src, field))
        out.meminfo = ir.Constant(src.meminfo.type, None)
        return out._getvalue()
    return arr(arr), codegen


# ------------------------------------------------------------------------------------- thread placement

MASK_WORDS = 16  # a CPU set as the kernel takes it: 16 x 64 bits, CPUs 0..1023
_LINUX = sys.platform.startswith("linux")


def _affinity_call(name):
    def typer(typingctx, mask):
        def codegen(context, builder, sig, args):
            """Linux `name`(0, sizeof mask, mask) for the calling thread; returns 0 on success, -1 elsewhere."""
            i32, i64 = ir.IntType(32), ir.IntType(64)
            if not _LINUX:
                return i32(-1)
            ary = context.make_array(sig.args[0])(context, builder, args[0])
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i32, [i32, i64, ary.data.type]),
                                                name)
            return builder.call(fn, [i32(0), i64(8 * MASK_WORDS), ary.data])
        return types.int32(mask), codegen
    return typer


# the calling thread's CPU set into / from a uint64 array of MASK_WORDS words (linked by name: cacheable)
_get_affinity = intrinsic(_affinity_call("sched_getaffinity"))
_set_affinity = intrinsic(_affinity_call("sched_setaffinity"))


@njit(cache=True, fastmath=False)
def pin(masks, tid, saved):
    """Keep thread tid on the CPUs of masks[tid] (MASK_WORDS words) until unpin(saved); saved gets its own CPU
    set. Returns whether it pinned (masks empty: nothing to do; not Linux, or the call failed: nothing done)."""
    if masks.shape[0] == 0 or _get_affinity(saved) != 0:
        return False
    return _set_affinity(masks[tid]) == 0


@njit(cache=True, fastmath=False)
def unpin(saved):
    _set_affinity(saved)


def placement(n_threads: int) -> np.ndarray:
    """One CPU per thread of a region, as (n_threads, MASK_WORDS) masks for pin(), where the threading layer
    needs it; else an empty array (nothing is pinned).

    numba's workqueue threads sleep between regions, and on Linux a woken thread is often queued on a busy
    core when the machine looks fully used (which spinning threads make it look): two of them then share one
    core for milliseconds while another idles, measured 2026-12-02 on the 2-core box as 2-5x slower decode
    steps in a run of several (scratch test: 5.98 ms median per region against OpenMP's 2.94; pinned, 3.14).
    OpenMP's threads spin between regions and never had it, so only workqueue regions are pinned: the CPUs
    this process may use, one per physical core before any core's second hardware thread. On macOS (where
    numba runs workqueue) there is no such call; its scheduler's placement is not measured."""
    import numba

    try:
        layer = numba.threading_layer()
    except ValueError:
        return np.zeros((0, MASK_WORDS), np.uint64)
    if not _LINUX or layer != "workqueue" or n_threads < 2:
        return np.zeros((0, MASK_WORDS), np.uint64)
    cpus = _cpus_by_core()
    if n_threads > len(cpus):
        return np.zeros((0, MASK_WORDS), np.uint64)
    masks = np.zeros((n_threads, MASK_WORDS), np.uint64)
    for tid, cpu in enumerate(cpus[:n_threads]):
        if cpu >= 64 * MASK_WORDS:
            return np.zeros((0, MASK_WORDS), np.uint64)
        masks[tid, cpu // 64] = np.uint64(1) << np.uint64(cpu % 64)
    return masks


def _cpus_by_core() -> list[int]:
    """The CPUs this process may run on, the first hardware thread of every core before the second ones
    (sysfs topology; in plain order where it cannot be read)."""
    import os

    allowed = sorted(os.sched_getaffinity(0))
    seen: set[str] = set()
    first, rest = [], []
    for cpu in allowed:
        try:
            with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list") as f:
                core = f.read().strip()
        except OSError:
            return allowed
        (rest if core in seen else first).append(cpu)
        seen.add(core)
    return first + rest


def concurrent_layer() -> bool:
    """Whether numba's threading layer runs the n iterations of prange(n_threads) at once, one per thread
    (OpenMP, workqueue), as barrier() needs. Asked after the layer is chosen (the first parallel launch)."""
    import numba

    try:
        return numba.threading_layer() in ("omp", "workqueue")
    except ValueError:  # no parallel region has run yet: the layer is not chosen
        return False
