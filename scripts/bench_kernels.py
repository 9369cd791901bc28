#!/usr/bin/env python3
"""Benchmark the quantized kernels against numpy float32 on the dequantized matrix.

For each type and shape (rows N x cols K, numpy order: N outputs of K inputs):
  matvec  GB/s of weight bytes streamed (one token), and numpy's sgemv time over ours (x np)
  matmul  GFLOP/s (2*N*K*T) at T = 32 and 256 tokens, beside numpy's sgemm on the float32 matrix; for the
          types with an integer GEMM also both strategies (int: the GEMM, tiles: dequantized tiles + BLAS)
Each thread count runs in its own process so numpy's BLAS gets the same number of threads as numba.
Times are the best of several rounds (the machine may be shared: best-of filters out preemption).

    .venv/bin/python scripts/bench_kernels.py            # all types, all shapes, 1 and 2 threads
    .venv/bin/python scripts/bench_kernels.py --quick    # Q4_0 Q4_1 Q8_0 Q4_K Q6_K on two shapes
    .venv/bin/python scripts/bench_kernels.py --types Q4_K --shapes 1536x1536 --threads 1 --tokens "" --repeat 5
                                                         # matvec only, median of 5 runs (a shared machine)
    .venv/bin/python scripts/bench_kernels.py --crossover Q4_K 1536x8960   # integer vs tiled matmul per T
    .venv/bin/python scripts/bench_kernels.py --asm      # vector instructions in each row kernel
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SHAPES = ["576x1536", "1536x576", "1536x8960", "8960x1536", "151936x896"]
QUICK_SHAPES = ["576x1536", "1536x8960"]
QUICK_TYPES = ["Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q6_K"]
TOKENS = (32, 256)


def best_time(fn, min_reps: int = 3, budget_s: float = 0.3, rounds: int = 3) -> float:
    """Best wall time of fn() over `rounds` rounds of at least min_reps calls or budget_s seconds each."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        start, n = time.perf_counter(), 0
        while n < min_reps or time.perf_counter() - start < budget_s:
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
            n += 1
        time.sleep(0.05)  # let a competing process run between rounds
    return best


def make_matrix(np, quants, ggml_type: int, n: int, k: int):
    """Raw rows for an (n, k) matrix: 64 quantized random rows tiled (quantizing 100M values takes long)."""
    rng = np.random.default_rng(0)
    block = quants.quantize(rng.standard_normal((min(64, n), k)).astype(np.float32), ggml_type)
    reps = -(-n // block.shape[0])
    return np.ascontiguousarray(np.tile(block, (reps, 1))[:n])


def median_rows(runs: list[list[dict]]) -> list[dict]:
    """Per (threads, type, shape): the median over runs of each timing (each run's timing is a best-of)."""
    import statistics
    out = []
    for same in zip(*runs):
        row = dict(same[0])
        for key in row:
            if key.endswith("_s"):
                row[key] = statistics.median(r[key] for r in same)
        out.append(row)
    return out


def run_child(threads: int, types: list[str], shapes: list[str], with_numpy: bool, tokens) -> list[dict]:
    import numpy as np

    from gguf_runtime import quants
    from gguf_runtime.quants.kernels import GEMM_TYPES

    quants.set_threads(threads)
    by_name = {q.name: code for code, q in quants.QTYPES.items()}
    rng = np.random.default_rng(1)
    rows = []
    for shape in shapes:
        n, k = (int(v) for v in shape.split("x"))
        x = rng.standard_normal(k).astype(np.float32)
        xs = {t: rng.standard_normal((t, k)).astype(np.float32) for t in tokens}
        for name in types:
            if k % quants.QTYPES[by_name[name]].block_size:
                continue  # e.g. K-quants need rows of whole 256-blocks (GGUF files use another type there)
            raw = make_matrix(np, quants, by_name[name], n, k)
            m = quants.QMatrix(raw, by_name[name], name)
            row = {"threads": threads, "type": name, "shape": shape, "bytes": raw.nbytes}
            out = np.empty(n, np.float32)
            row["matvec_s"] = best_time(lambda: m.matvec(x, out))
            for t in tokens:
                outm = np.empty((t, n), np.float32)
                row[f"matmul{t}_s"] = best_time(lambda: m.matmul(xs[t], outm), min_reps=2, budget_s=0.2, rounds=2)
                if by_name[name] in GEMM_TYPES:  # both strategies, whichever matmul picks, in the same run
                    for strategy in ("integer", "tiled"):
                        fn = getattr(m, f"matmul_{strategy}")
                        row[f"{strategy}{t}_s"] = best_time(lambda: fn(xs[t], outm), min_reps=2, budget_s=0.2,
                                                            rounds=2)
            if with_numpy:
                wf = quants.dequantize(raw, by_name[name])
                row["np_matvec_s"] = best_time(lambda: wf @ x)
                for t in tokens:
                    row[f"np_matmul{t}_s"] = best_time(lambda: xs[t] @ wf.T, min_reps=2, budget_s=0.2, rounds=2)
                del wf
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def run_crossover(name: str, shape: str, threads: int) -> None:
    import numpy as np

    from gguf_runtime import quants

    quants.set_threads(threads)
    code = next(c for c, q in quants.QTYPES.items() if q.name == name)
    n, k = (int(v) for v in shape.split("x"))
    m = quants.QMatrix(make_matrix(np, quants, code, n, k), code, name)
    rng = np.random.default_rng(1)
    print(f"{name} {shape}, {threads} thread(s): ms per call (integer kernels | dequantized tiles + BLAS)")
    for t in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64):
        X = rng.standard_normal((t, k)).astype(np.float32)
        out = np.empty((t, n), np.float32)
        ti = best_time(lambda: m.matmul_integer(X, out), budget_s=0.2)
        tt = best_time(lambda: m.matmul_tiled(X, out), budget_s=0.2)
        print(f"  T={t:3d}  {ti * 1e3:8.2f} | {tt * 1e3:8.2f}   {'integer' if ti < tt else 'tiles'}")


ASM_WATCH = ("vpmaddubsw", "vpmaddwd", "vpdpbusd", "vpsignb", "vpshufb", "vfmadd231ps", "vcvtph2ps", "vcvtdq2ps",
             "sdot", "smull", "tbl", "fmla", "fcvtl", "fcvtl2", "fcvt", "scvtf")


def asm_report(types: list[str]) -> None:
    """How many of the interesting vector instructions each type's row dot product compiles to."""
    import collections
    import re

    import numpy as np
    from numba import njit

    import llvmlite.binding as llvm
    import numba

    from gguf_runtime import quants
    from gguf_runtime.quants import simd
    from gguf_runtime.quants.activation import quantize_q8_0, quantize_q8_k
    from gguf_runtime.quants.registry import ACT_Q8_0

    print(f"{llvm.get_process_triple()}, numba {numba.__version__} compiling for "
          f"{numba.config.CPU_NAME or llvm.get_host_cpu_name()}: x86 AVX2 {simd.USE_X86_AVX2}, "
          f"AArch64 sdot {simd.USE_ARM_DOTPROD}, tbl {simd.USE_ARM_NEON}, hardware fp16 {simd.USE_NATIVE_F16}")
    print("instruction counts in each dot_row (whole function; the hot loop holds one copy or an unrolled few)")
    for name in types:
        code = next(c for c, q in quants.QTYPES.items() if q.name == name)
        qt = quants.QTYPES[code]
        k = 256
        x = np.ones(k, np.float32)
        xq, xd, xs = np.zeros(k, np.int8), np.zeros(k // 32, np.float32), np.zeros(k // 16, np.int16)
        if qt.block_size > 1:
            (quantize_q8_0 if qt.activation == ACT_Q8_0 else quantize_q8_k)(x, xq, xd, xs)
        fresh = njit(qt.dot_row.py_func)  # cached code cannot be inspected
        fresh(quants.quantize(x[None], code)[0], x, xq, xd, xs)
        asm = fresh.inspect_asm(fresh.signatures[0])
        counts = collections.Counter(re.findall(r"^\s+([a-z][a-z0-9]*)", asm, re.M))
        found = ", ".join(f"{op} {counts[op]}" for op in ASM_WATCH if counts[op])
        print(f"  {name:7s} {sum(counts.values()):5d} instructions; {found}")


def print_table(rows: list[dict], tokens=TOKENS) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="quantized kernels vs numpy float32 on the dequantized matrix (best of rounds; "
                        "median over --repeat runs)")
    for col in ("thr", "type", "N x K", "matvec GB/s", "x np", *[f"mm{t} GF/s" for t in tokens],
                *[f"{c}{t} GF/s" for c in ("int", "tiles") for t in tokens], *[f"np{t} GF/s" for t in tokens]):
        table.add_column(col, justify="right")
    for r in rows:
        n, k = (int(v) for v in r["shape"].split("x"))
        gf = lambda t, key: f"{2 * n * k * t / r[key] / 1e9:.1f}" if key in r else "-"  # noqa: E731
        table.add_row(str(r["threads"]), r["type"], r["shape"], f"{r['bytes'] / r['matvec_s'] / 1e9:.2f}",
                      f"{r['np_matvec_s'] / r['matvec_s']:.2f}" if "np_matvec_s" in r else "-",
                      *[gf(t, f"matmul{t}_s") for t in tokens],
                      *[gf(t, f"{c}{t}_s") for c in ("integer", "tiled") for t in tokens],
                      *[gf(t, f"np_matmul{t}_s") for t in tokens])
    Console(width=200).print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="five types on two shapes")
    ap.add_argument("--types", help="comma-separated type names (default: all supported quantized types)")
    ap.add_argument("--shapes", help="comma-separated NxK shapes")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--no-numpy", action="store_true", help="skip the numpy float32 baselines")
    ap.add_argument("--tokens", default=",".join(map(str, TOKENS)),
                    help='comma-separated matmul token counts ("" for matvec only)')
    ap.add_argument("--repeat", type=int, default=1, help="run each thread count this many times, report medians")
    ap.add_argument("--json", help="also write the rows to this file")
    ap.add_argument("--crossover", nargs=2, metavar=("TYPE", "NxK"), help="integer vs tiled matmul per T")
    ap.add_argument("--asm", action="store_true", help="count vector instructions in the row kernels")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()

    tokens = tuple(int(t) for t in args.tokens.split(",") if t)
    if args.child is not None:
        if args.crossover:
            run_crossover(*args.crossover, threads=args.child)
        else:
            run_child(args.child, args.types.split(","), args.shapes.split(","), not args.no_numpy, tokens)
        return

    if args.asm:
        from gguf_runtime.quants import QTYPES
        asm_report(args.types.split(",") if args.types else [q.name for q in QTYPES.values()])
        return
    if args.types:
        types = args.types.split(",")
    elif args.quick:
        types = QUICK_TYPES
    else:
        from gguf_runtime.quants import QTYPES
        types = [q.name for q in QTYPES.values() if q.block_size > 1]
    shapes = args.shapes.split(",") if args.shapes else QUICK_SHAPES if args.quick else SHAPES
    rows: list[dict] = []
    for threads in (int(t) for t in args.threads.split(",")):
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
                   MKL_NUM_THREADS=str(threads))
        cmd = [sys.executable, __file__, "--child", str(threads), "--types", ",".join(types), "--shapes",
               ",".join(shapes), "--tokens", args.tokens] + (["--no-numpy"] if args.no_numpy else [])
        if args.crossover:
            subprocess.run(cmd + ["--crossover", *args.crossover], env=env, check=True)
            continue
        runs = []
        for _ in range(args.repeat):
            proc = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True)
            runs.append([json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")])
        rows += median_rows(runs)
    if rows:
        print_table(rows, tokens)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
