#!/usr/bin/env python3
"""Decode ms/token of the fused path (gguf_runtime/fused.py) against the layer-by-layer one, in one process.

The two paths alternate (3 rounds of --steps greedy steps each, medians) on one sequence after a 256-token
prompt, so a load change on a shared machine hits both alike; fresh-process benchmarks there move by 20-30 %.

    # here, on a real file
    .venv/bin/python scripts/bench_fused.py MODEL_OR_PATH -t 1 2
    # on the lent many-core box, on bench_threads.py's random-weight files with the real shapes
    python3 .perfcarry/scripts/bench_fused.py --carried .perfcarry smollm2-135m qwen2.5-coder-1.5b -t 16 8 4 2 1

--rows B [B ...] times batched steps instead: B sequences (each after a 256-token prompt) decoding one token
each per step, ms per step for each path: what fused.SERVED_ROWS is chosen from. The fused path is allowed
every batch while measuring (up to fused.MAX_ROWS rows).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def built_model(carried: Path, name: str) -> Path:
    """bench_threads.py's random-weight file of this shape, built once under /tmp/bench-fused."""
    import bench_threads

    work = Path("/tmp/bench-fused")
    work.mkdir(exist_ok=True)
    out = work / f"{name}.gguf"
    if not out.exists():
        spec = bench_threads.read_spec(carried, name)
        f16 = work / f"{name}.f16.gguf"
        bench_threads.build_f16(spec, f16)
        bench_threads.quantize_in_child(carried, name, f16, out)  # this process, which measures, never loads it
        f16.unlink()
    return out


def measure(path: str, threads: list[int], steps: int, rows: list[int]) -> None:
    import numpy as np

    from gguf_runtime import LLM
    from gguf_runtime.fused import MAX_ROWS

    n_seqs = max(rows)
    llm = LLM(path, n_ctx=1024, n_threads=max(threads), kv_cache_tokens=1024 * n_seqs)
    runner, model = llm.engine.runner, llm.engine.runner.model
    model.fused.max_rows = MAX_ROWS
    rng = np.random.default_rng(1)
    seqs = [llm.engine.kv.new_sequence() for _ in range(n_seqs)]
    for kv in seqs:
        runner.evaluate(kv, rng.integers(0, model.n_vocab, 256).tolist())

    def per_step(fused: bool, b: int) -> float:
        model.fused.eligible = fused
        tokens, start = [5] * b, time.perf_counter()
        for _ in range(steps):
            tokens = np.argmax(runner.forward(seqs[:b], [[t] for t in tokens]), axis=1).tolist()
        seconds = (time.perf_counter() - start) / steps
        for kv in seqs[:b]:
            kv.truncate(kv.n - steps)
        return seconds

    for b in rows:  # compile (or load) both paths for every batch size outside the timings
        for fused in (True, False):
            per_step(fused, b)
    for n in threads:
        runner.n_threads = n
        for b in rows:
            times = {True: [], False: []}
            for _ in range(3):
                for fused in (True, False):
                    times[fused].append(per_step(fused, b))
            f, layered = (statistics.median(times[m]) * 1e3 for m in (True, False))
            what = "ms/token" if b == 1 else f"ms/step of {b} rows"
            print(f"{Path(path).name} t={n}: fused {f:.2f} {what} ({b * 1e3 / f:.1f} tok/s), "
                  f"layer by layer {layered:.2f} {what} ({b * 1e3 / layered:.1f} tok/s)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="catalog names or paths; with --carried, bench_threads.py shapes")
    ap.add_argument("-t", "--threads", type=int, nargs="+", default=[2])
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--rows", type=int, nargs="+", default=[1], help="sequences decoding together per step")
    ap.add_argument("--carried", type=Path, help="a bench_threads.py carry directory (on the many-core box)")
    args = ap.parse_args()
    sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]
    if args.carried:
        sys.path[2:2] = [str(w) for w in sorted((args.carried / "wheels").glob("*.whl"))]
    for name in args.models:
        measure(str(built_model(args.carried.resolve(), name)) if args.carried else name, args.threads, args.steps,
                args.rows)


if __name__ == "__main__":
    main()
