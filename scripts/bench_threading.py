#!/usr/bin/env python3
"""Decode and prefill speed per numba threading layer: what a Mac gets (workqueue: numba's macOS wheels have no
TBB, and its OpenMP layer needs a libomp they do not ship) against this machine's default (omp).

    .venv/bin/python scripts/bench_threading.py [-m smollm2-135m] [-t 2] [--rounds 5] [--layers omp,workqueue]

Each measurement is a fresh process of scripts/bench.py's own child (256-token prompt, then 128 greedy tokens,
median of --reps runs after a warm-up) with NUMBA_THREADING_LAYER set; the layers take turns, round after round,
so a load spike on a shared machine hits them alike. Prints the median per layer and each layer's decode as a
ratio of the first layer's.
"""

from __future__ import annotations

import argparse
import os
import sys
import statistics

from bench import run_child


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", default="smollm2-135m")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5, help="fresh processes per layer (interleaved)")
    ap.add_argument("--reps", type=int, default=2, help="timed generations per process (median)")
    ap.add_argument("--layers", default="omp,workqueue")
    args = ap.parse_args()
    layers = args.layers.split(",")

    results: dict[str, list[dict]] = {layer: [] for layer in layers}
    for r in range(args.rounds):
        for layer in layers:
            os.environ["NUMBA_THREADING_LAYER"] = layer  # inherited by the child
            res = run_child(sys.executable, "ours", args.model, args.threads, args.reps)
            if res["threading_layer"] != layer:
                raise SystemExit(f"asked for the {layer} layer, numba ran {res['threading_layer']}")
            results[layer].append(res)
            print(f"round {r + 1}: {layer:10s} decode {res['decode_tps']:6.1f} tok/s, "
                  f"prefill {res['prefill_tps']:7.1f} tok/s, load {os.getloadavg()[0]:.1f}", flush=True)

    base = statistics.median(x["decode_tps"] for x in results[layers[0]])
    print(f"\n{args.model}, {args.threads} threads, median of {args.rounds} interleaved processes")
    print(f"{'layer':10s} {'decode tok/s':>13s} {'range':>13s} {'prefill tok/s':>14s} {'decode ratio':>13s}")
    for layer in layers:
        dec = [x["decode_tps"] for x in results[layer]]
        pre = [x["prefill_tps"] for x in results[layer]]
        print(f"{layer:10s} {statistics.median(dec):13.1f} {min(dec):6.1f}-{max(dec):<6.1f} "
              f"{statistics.median(pre):14.1f} {statistics.median(dec) / base:13.2f}")


if __name__ == "__main__":
    main()
