#!/usr/bin/env python3
"""gguf-runtime vs llama.cpp, same model, same threads, one run: open time, prefill and decode tok/s,
time to first token (cold and warm numba cache), peak RSS (against file + KV pool + 150 MB).

    .venv/bin/python scripts/bench.py [-m smollm2-135m -m qwen2.5-coder-1.5b] [-t 2] [--json]
        [--llama-python .fixtures-venv/bin/python]

Each measurement runs in a child process of its own (so peak RSS and start-up are per runtime); llama.cpp
is driven through llama-cpp-python from the interpreter given by --llama-python (`make fixtures-env`).
Prefill: a 256-token prompt (the first tokens of tests/fixtures/ppl_text.txt, or the ids of --ids) from an
empty cache. Decode: 128 greedy tokens after it. Both are the median of --reps runs after one short warm-up
(WARMUP_PROMPT tokens, WARMUP_GEN generated: it compiles or loads every kernel and pages the weights in).
Time to first token: `gguf-runtime complete -n 1` (default n_ctx) from process start to exit, the median of
--ttft-reps runs with a warm numba cache and one run with an empty one; its peak RSS is reported too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXT = ROOT / "tests" / "fixtures" / "ppl_text.txt"
N_PROMPT = 256
N_GEN = 128
WARMUP_PROMPT, WARMUP_GEN = 32, 8


def peak_rss_mb(who: int | None = None) -> float:
    """This process's peak RSS, or that of the rusage `who` (from os.wait4)."""
    import resource

    maxrss = (who if who is not None else resource.getrusage(resource.RUSAGE_SELF)).ru_maxrss
    return maxrss / (1 << 20 if sys.platform == "darwin" else 1 << 10)  # bytes on macOS, KiB on Linux


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """Run `cmd`; its wall time in seconds and its own peak RSS in MB."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise subprocess.CalledProcessError(os.waitstatus_to_exitcode(status), cmd, stderr=stderr)
    return seconds, peak_rss_mb(usage)


def read_ids(path: str | None) -> list[int] | None:
    """Token ids given to both runtimes (comma-separated in a file), or None to tokenize the text."""
    return None if path is None else [int(i) for i in Path(path).read_text().split(",")]


def child_ours(model: str, threads: int, reps: int, ids: list[int] | None = None) -> dict:
    sys.path.insert(0, str(ROOT))
    import numba

    from gguf_runtime.api import LLM
    from gguf_runtime.sampling import SamplingParams

    t0 = time.perf_counter()
    # prefix caching off: each rep must evaluate the whole prompt, not reuse the blocks of the last one
    llm = LLM(model, n_ctx=N_PROMPT + N_GEN + 8, n_threads=threads, enable_prefix_caching=False)
    open_s = time.perf_counter() - t0
    ids = ids or llm.tokenize(TEXT.read_text(), add_special=True)[:N_PROMPT]
    llm.generate(ids[:WARMUP_PROMPT], SamplingParams(temperature=0, max_tokens=WARMUP_GEN, ignore_eos=True))
    params = SamplingParams(temperature=0, max_tokens=N_GEN, ignore_eos=True)
    prefill, decode = [], []
    for _ in range(reps):
        llm.reset()
        stats = llm.generate(ids, params)[0].outputs[0].metrics
        prefill.append(stats.prefill_tokens_per_second)
        decode.append(stats.decode_tokens_per_second)
    return {"open_s": open_s, "prefill_tps": statistics.median(prefill), "decode_tps": statistics.median(decode),
            "peak_rss_mb": peak_rss_mb(), "kv_mb": llm.engine.kv.pool.nbytes / 2**20,
            "threading_layer": numba.threading_layer()}


def child_llama(model: str, threads: int, reps: int, ids: list[int] | None = None) -> dict:
    import numpy as np
    from llama_cpp import Llama

    sys.path.insert(0, str(ROOT))
    from gguf_runtime.catalog import resolve_model

    t0 = time.perf_counter()
    llm = Llama(str(resolve_model(model)), n_ctx=N_PROMPT + N_GEN + 8, n_batch=512, n_threads=threads,
                n_threads_batch=threads, verbose=False)
    open_s = time.perf_counter() - t0
    ids = ids or llm.tokenize(TEXT.read_text().encode(), add_bos=True)[:N_PROMPT]

    def run(prompt: list[int], n_gen: int) -> tuple[float, float]:
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        t1 = time.perf_counter()
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        for _ in range(n_gen - 1):
            llm.eval([token])
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        return len(prompt) / (t1 - t0), (n_gen - 1) / (time.perf_counter() - t1)

    run(ids[:WARMUP_PROMPT], WARMUP_GEN)
    prefill, decode = zip(*(run(ids, N_GEN) for _ in range(reps)))
    return {"open_s": open_s, "prefill_tps": statistics.median(prefill), "decode_tps": statistics.median(decode),
            "peak_rss_mb": peak_rss_mb()}


def ttft_ours(model: str, threads: int, cold: bool) -> tuple[float, float]:
    """Wall time of `gguf-runtime complete -n 1` from process start to its exit (first token printed), and
    its peak RSS."""
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as empty:
        if cold:
            env["NUMBA_CACHE_DIR"] = empty
        return run_measured([sys.executable, "-m", "gguf_runtime", "complete", "-m", model, "-t", str(threads),
                             "-n", "1", "--temperature", "0", "Hello"], env)


def ttft_llama(python: str, model: str, threads: int) -> float:
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from llama_cpp import Llama\nfrom gguf_runtime.catalog import resolve_model\n"
            "llm = Llama(str(resolve_model(%r)), n_ctx=64, n_threads=%d, verbose=False)\n"
            "llm.create_completion('Hello', max_tokens=1, temperature=0)\n") % (str(ROOT), model, threads)
    return run_measured([python, "-c", code])[0]


def run_child(python: str, which: str, model: str, threads: int, reps: int, ids_file: str | None = None,
              env: dict | None = None) -> dict:
    """One measurement in a fresh process (`python` runs this file with --child)."""
    cmd = [python, __file__, "--child", which, "-m", model, "-t", str(threads), "--reps", str(reps)]
    out = subprocess.run(cmd + (["--ids", ids_file] if ids_file else []), check=True, capture_output=True,
                         text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", action="append", help="catalog name or path (repeatable)")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--llama-python", default=str(ROOT / ".fixtures-venv" / "bin" / "python"))
    ap.add_argument("--ttft-reps", type=int, default=5, help="warm time-to-first-token runs (median)")
    ap.add_argument("--no-ttft", action="store_true", help="skip the time-to-first-token runs")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", choices=["ours", "llama"], help=argparse.SUPPRESS)
    ap.add_argument("--ids", help=argparse.SUPPRESS)  # child: a file of comma-separated prompt ids
    args = ap.parse_args()
    models = args.model or ["smollm2-135m"]
    if args.child:
        fn = child_ours if args.child == "ours" else child_llama
        print(json.dumps(fn(models[0], args.threads, args.reps, read_ids(args.ids))))
        return
    have_llama = Path(args.llama_python).exists()
    if not have_llama:
        print(f"note: {args.llama_python} not found (make fixtures-env); measuring gguf-runtime only",
              file=sys.stderr)
    sys.path.insert(0, str(ROOT))
    from gguf_runtime.catalog import resolve_model

    results = []
    for model in models:
        row = {"model": model, "threads": args.threads, "file_mb": resolve_model(model).stat().st_size / 2**20,
               "ours": run_child(sys.executable, "ours", model, args.threads, args.reps)}
        if have_llama:
            row["llama.cpp"] = run_child(args.llama_python, "llama", model, args.threads, args.reps)
        if not args.no_ttft:
            ours = row["ours"]
            ours["ttft_cold_s"], _ = ttft_ours(model, args.threads, cold=True)
            warm = [ttft_ours(model, args.threads, cold=False) for _ in range(args.ttft_reps)]
            ours["ttft_warm_s"] = statistics.median(seconds for seconds, _ in warm)
            ours["ttft_peak_rss_mb"] = max(rss for _, rss in warm)
            if have_llama:
                row["llama.cpp"]["ttft_warm_s"] = statistics.median(
                    ttft_llama(args.llama_python, model, args.threads) for _ in range(args.ttft_reps))
        results.append(row)
        if not args.json:
            print_row(row)
    if args.json:
        print(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": os.uname().machine,
                          "cpus": os.cpu_count(), "results": results}, indent=1))


def print_row(row: dict) -> None:
    ours, ref = row["ours"], row.get("llama.cpp")
    layer = f", numba {ours['threading_layer']} layer" if "threading_layer" in ours else ""
    print(f"\n{row['model']} ({row['threads']} threads{layer}; file {row['file_mb']:.0f} MB)")
    print(f"  {'metric':<14}{'gguf-runtime':>14}{'llama.cpp':>12}{'ratio':>8}")
    for key, label, higher_better in (("open_s", "open s", False), ("prefill_tps", "prefill tok/s", True),
                                      ("decode_tps", "decode tok/s", True), ("ttft_warm_s", "ttft warm s", False),
                                      ("ttft_cold_s", "ttft cold s", False), ("peak_rss_mb", "peak RSS MB", False),
                                      ("ttft_peak_rss_mb", "ttft RSS MB", False)):
        if key not in ours:
            continue
        theirs = ref.get(key) if ref else None
        ratio = "" if not theirs else f"{ours[key] / theirs:.2f}x"
        print(f"  {label:<14}{ours[key]:>14.3f}{theirs if theirs is not None else '':>12.5}{ratio:>8}")
    if "kv_mb" in ours:  # #17's memory target: peak RSS within file + KV pool + 150 MB
        budget = row["file_mb"] + ours["kv_mb"] + 150
        verdict = "within" if ours["peak_rss_mb"] <= budget else "over"
        print(f"  RSS budget: file {row['file_mb']:.0f} + KV pool {ours['kv_mb']:.0f} + 150 = {budget:.0f} MB; "
              f"peak {ours['peak_rss_mb']:.0f} MB is {verdict}")


if __name__ == "__main__":
    main()
