"""gguf_runtime.sync: the barrier that holds a parallel region's threads together, and the thread placement
of workqueue regions (the fused decode's two dependencies on the threading layer)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numba
import numpy as np
from numba import njit, prange

from gguf_runtime import runtime
from gguf_runtime.sync import barrier, new_barrier

ROOT = Path(__file__).resolve().parent.parent


@njit(parallel=True, cache=False)
def _late_partner(values, seen, rounds, delay, state):
    """Thread 1 works `delay` iterations before each barrier (far longer than the spin before sleeping); thread 0
    then reads what thread 1 wrote before it arrived."""
    for t in prange(2):
        for r in range(rounds):
            if t == 1:
                s = 0.0
                for i in range(delay):
                    s += np.sqrt(i + 1.0)
                values[r] = r + 1 + 0.0 * s
            barrier(state, 2)
            if t == 0:
                seen[r] = values[r]
            barrier(state, 2)


def test_barrier_sleeps_while_its_partner_is_late():
    """A thread that waits longer than its spin sleeps (a futex on Linux): it sees every value written before
    the barrier, and it burns no core meanwhile (the process's CPU time stays near one thread's)."""
    runtime.setup()
    numba.set_num_threads(2)
    rounds, delay = 12, 3_000_000  # each round ~5-10 ms of thread 1's work
    values, seen = np.zeros(rounds), np.zeros(rounds)
    _late_partner(values, seen, 1, 10, new_barrier())  # compile
    state = new_barrier()
    wall, cpu = time.perf_counter(), time.process_time()
    _late_partner(values, seen, rounds, delay, state)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert seen.tolist() == [r + 1.0 for r in range(rounds)]
    assert state[16] == 0  # no thread is left counted as sleeping
    if sys.platform.startswith("linux"):
        assert cpu < 1.5 * wall, f"the waiting thread spun: {cpu:.3f} s of CPU in {wall:.3f} s"


WORKQUEUE_CHILD = textwrap.dedent("""
    import os, sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from gguf_runtime.api import LLM
    from gguf_runtime import sync
    from test_fused import _assert_paths_equal

    def cpu_sets():
        return {{open(f"/proc/self/task/{{t}}/status").read().split("Cpus_allowed_list:")[1].split()[0]
                for t in os.listdir("/proc/self/task")}}

    before = cpu_sets()
    llm = LLM({model!r}, n_ctx=256, n_threads=2)
    _assert_paths_equal(llm)  # fused (pinned) and layer-by-layer logits, bit for bit
    import numba
    assert numba.threading_layer() == "workqueue", numba.threading_layer()
    masks = llm.engine.runner.model.fused._placements[2]
    assert masks.shape[0] == 2 and len({{m.tobytes() for m in masks}}) == 2, masks  # two different CPUs
    after = cpu_sets()
    assert after == before, (before, after)  # every thread is put back where it was allowed to run
    print("ok", sorted(after))
""")


def test_workqueue_regions_are_pinned_and_put_back(smollm2_path):
    """Under numba's workqueue layer (what macOS gets), fused decode pins its two threads to two CPUs for the
    call: same logits as the layer-by-layer path, and afterwards every thread's CPU set is what it was."""
    assert sys.platform.startswith("linux") and len(os.sched_getaffinity(0)) >= 2
    code = WORKQUEUE_CHILD.format(tests=str(ROOT / "tests"), model=str(smollm2_path))
    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("ok")
