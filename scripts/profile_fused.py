#!/usr/bin/env python3
"""Where a fused decode step's time goes: per phase of a layer and per thread, from the time-stamp counter read
around every barrier of gguf_runtime/fused.py's region.

    PYTHONPATH=. .venv/bin/python scripts/profile_fused.py models/SmolLM2-135M-Instruct.Q4_1.gguf 1 2
    # on the lent box, with bench_threads' built model and carried code (copy this script out of the carry:
    # run from inside it, its directory would shadow PYTHONPATH's gguf_runtime)

It compiles a copy of fused.py whose barriers are timed (nothing in the package changes), runs a 256-token
prompt, then 64 greedy decode steps at each thread count, and prints for every phase (the work between two
barriers: Q/K/V rows, head norms and the K/V store, attention, O rows, gate/up rows, the activation, down rows)
the mean and largest work time over the threads and the mean and least wait at its barrier, in ms a step
summed over the layers. A phase whose largest work is well above its mean is unevenly split; a barrier wait
well above the others means threads idle there.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import time

import numpy as np

import gguf_runtime.fused as F
from gguf_runtime.api import LLM
from gguf_runtime.sampling import SamplingParams

PHASES = ["qkv", "head+kv", "attn", "o", "gate/up", "act", "down"]
N_PROMPT, N_GEN = 256, 64

_PROLOG = '''
from numba.core import cgutils as _cg
from llvmlite import ir as _ir
from numba.extending import intrinsic as _intrinsic


@_intrinsic
def _rdtsc(typingctx):
    def codegen(context, builder, sig, args):
        fn = _cg.get_or_insert_function(builder.module, _ir.FunctionType(_ir.IntType(64), []), "llvm.readcyclecounter")
        return builder.call(fn, [])
    return types.int64(), codegen


@njit(**_JIT)
def _timed_barrier(sync, threads, prof, tid, k):
    t0 = _rdtsc()
    prof[tid, 2 * k] += t0 - prof[tid, 2 * NPH]
    barrier(sync, threads)
    t1 = _rdtsc()
    prof[tid, 2 * k + 1] += t1 - t0
    prof[tid, 2 * NPH] = t1


@njit(**_JIT)
def _clock():
    return _rdtsc()
'''


def profiled_module():
    """fused.py with `prof` (threads, 2 * phases + 1) int64 counts added to _layers/_thread and each barrier
    timed; uncached (its kernels compile in this process)."""
    src = open(F.__file__).read().replace("cache=True", "cache=False")
    src = src.replace("out_norm, w_out, out_rows, logits):", "out_norm, w_out, out_rows, logits, prof):")
    src = src.replace("out_norm, w_out, out_rows, logits)\n        if pinned",
                      "out_norm, w_out, out_rows, logits, prof)\n        if pinned")
    start = src.index("@njit(**_JIT)\ndef _thread(")
    head, body = src[:start], src[start:]
    count = iter(range(100))
    body = re.sub(r"barrier\(sync, threads\)", lambda m: f"_timed_barrier(sync, threads, prof, tid, {next(count)})",
                  body)
    n_phases = next(count)
    loop = "    for layer in range(l0, l1):"
    body = body.replace(loop, "    prof[tid, 2 * NPH] = _rdtsc()\n" + loop, 1)
    src = head + f"\nNPH = {n_phases}\n" + _PROLOG + body
    src = src.replace("out_rows if last else no_rows, logits if last else no_logits)",
                      "out_rows if last else no_rows, logits if last else no_logits, PROF)")
    spec = importlib.util.spec_from_loader("gguf_runtime.fused_profiled", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "gguf_runtime"
    sys.modules[spec.name] = module
    exec(compile(src, "fused_profiled", "exec"), module.__dict__)
    return module, n_phases


def counter_hz(module) -> float:
    module._clock()
    t0, c0 = time.perf_counter(), module._clock()
    time.sleep(0.2)
    return (module._clock() - c0) / (time.perf_counter() - t0)


def main() -> None:
    model, threads = sys.argv[1], [int(a) for a in sys.argv[2:]] or [1, 2]
    P, n_phases = profiled_module()
    hz = counter_hz(P)
    for n in threads:
        llm = LLM(model, n_ctx=N_PROMPT + N_GEN + 8, n_threads=n, enable_prefix_caching=False)
        fused = P.FusedLayers(llm.model)
        fused.max_rows = llm.model.fused.max_rows
        llm.model.fused = fused
        calls = [0, 0.0]
        run = fused.run

        def timed_run(*a, **k):
            t0 = time.perf_counter()
            out = run(*a, **k)
            calls[0] += 1
            calls[1] += time.perf_counter() - t0
            return out
        fused.run = timed_run
        ids = np.random.default_rng(17).integers(0, llm.tokenizer.n_vocab, N_PROMPT).tolist()
        P.PROF = np.zeros((n, 2 * n_phases + 1), np.int64)
        llm.generate(ids[:16], SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))  # compiles
        llm.reset()
        P.PROF[:] = 0
        calls[:] = [0, 0.0]
        params = SamplingParams(temperature=0, max_tokens=N_GEN, ignore_eos=True)
        metrics = llm.generate(ids, params)[0].outputs[0].metrics
        prof = P.PROF / hz * 1e3 / max(calls[0], 1)  # ms a call
        rate = metrics.decode_tokens_per_second
        print(f"\n== {n} threads: decode {rate:.1f} tok/s ({1e3 / rate:.2f} ms a step); "
              f"the fused call {calls[1] / calls[0] * 1e3:.2f} ms over {calls[0]} calls")
        print(f"{'phase':>8} {'work mean':>9} {'work max':>9} {'wait mean':>9} {'wait min':>9}"
              "   (ms a step, all layers)")
        for k in range(n_phases):
            work, wait = prof[:, 2 * k], prof[:, 2 * k + 1]
            name = PHASES[k] if k < len(PHASES) else str(k)
            print(f"{name:>8} {work.mean():9.3f} {work.max():9.3f} {wait.mean():9.3f} {wait.min():9.3f}")
        del llm


if __name__ == "__main__":
    main()
