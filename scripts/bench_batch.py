#!/usr/bin/env python3
"""Continuous-batching throughput: generated tokens/s over all sequences, for C concurrent prompts.

    .venv/bin/python scripts/bench_batch.py [-m smollm2-135m -m qwen2.5-coder-0.5b] [-t 2]
        [-c 1 -c 4 -c 8 -c 16] [--n-prompt 128] [--n-gen 64] [--json] [--llama-python .fixtures-venv/bin/python]

For each C: `LLM.generate` on C different prompts of n-prompt tokens (windows of tests/fixtures/ppl_text.txt),
greedy, n-gen tokens each, end-of-text ignored, prefix caching off (no prompt shares a block anyway), wall
time of the whole call (prefill included). Against: the same prompts one at a time (max_num_seqs=1), and
llama.cpp (llama-cpp-python) one at a time on the same prompts and threads. KV memory per sequence is the
pool's bytes per position times the positions a sequence holds, for f32 (default) and q8_0; the f32-vs-q8_0 throughput
at the largest C is measured too. Each runtime runs in a child process of its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXT = ROOT / "tests" / "fixtures" / "ppl_text.txt"


def prompts_from(ids: list[int], count: int, n_prompt: int) -> list[list[int]]:
    """count windows of n_prompt tokens, each starting at a different place of the text."""
    step = max(1, (len(ids) - n_prompt) // max(count, 1))
    return [ids[i * step:i * step + n_prompt] for i in range(count)]


def child_ours(args) -> dict:
    sys.path.insert(0, str(ROOT))
    from gguf_runtime.api import LLM
    from gguf_runtime.sampling import SamplingParams

    max_c = max(args.concurrency)
    n_ctx = args.n_prompt + args.n_gen + 8
    params = SamplingParams(temperature=0, max_tokens=args.n_gen, ignore_eos=True)
    out: dict = {"batched": {}, "kv_bytes_per_seq": {}}
    for kv_type in ("f32", "q8_0"):
        llm = LLM(args.model, n_ctx=n_ctx, n_threads=args.threads, kv_cache_tokens=max_c * n_ctx * 2,
                  kv_cache_dtype=kv_type, enable_prefix_caching=False)
        prompts = prompts_from(llm.tokenize(TEXT.read_text(), add_special=False), max_c, args.n_prompt)
        out["kv_bytes_per_seq"][kv_type] = llm.kv_bytes_per_token * (args.n_prompt + args.n_gen)
        for c in (1, max_c):  # warm-up: compile every kernel (the GEMM from 4 rows), page the weights in
            llm.max_num_seqs = c
            llm.generate(prompts[:max(c, 4)], SamplingParams(temperature=0, max_tokens=4))
        for c in (args.concurrency if kv_type == "f32" else [max_c]):
            llm.max_num_seqs = c
            t0 = time.perf_counter()
            llm.generate(prompts[:c], params)
            out["batched"][f"{kv_type}/{c}"] = c * args.n_gen / (time.perf_counter() - t0)
        if kv_type == "f32":
            llm.max_num_seqs = 1
            n_seq = min(4, max_c)
            t0 = time.perf_counter()
            llm.generate(prompts[:n_seq], params)
            out["sequential"] = n_seq * args.n_gen / (time.perf_counter() - t0)
    return out


def child_llama(args) -> dict:
    import numpy as np
    from llama_cpp import Llama

    sys.path.insert(0, str(ROOT))
    from gguf_runtime.catalog import resolve_model

    llm = Llama(str(resolve_model(args.model)), n_ctx=args.n_prompt + args.n_gen + 8, n_batch=512,
                n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
    prompts = prompts_from(llm.tokenize(TEXT.read_text().encode(), add_bos=False), min(4, max(args.concurrency)),
                           args.n_prompt)
    llm.eval(prompts[0][:8])  # warm-up
    t0 = time.perf_counter()
    for ids in prompts:
        llm.reset()
        llm.eval(ids)
        for _ in range(args.n_gen - 1):
            llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
    return {"sequential": len(prompts) * args.n_gen / (time.perf_counter() - t0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", action="append")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-c", "--concurrency", type=int, action="append")
    ap.add_argument("--n-prompt", type=int, default=128)
    ap.add_argument("--n-gen", type=int, default=64)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--llama-python", default=str(ROOT / ".fixtures-venv" / "bin" / "python"))
    ap.add_argument("--child", choices=["ours", "llama"])
    args = ap.parse_args()
    args.concurrency = args.concurrency or [1, 4, 8, 16]
    if args.child:
        args.model = args.model[0]
        result = child_ours(args) if args.child == "ours" else child_llama(args)
        print(json.dumps(result))
        return

    rows = []
    for model in args.model or ["smollm2-135m", "qwen2.5-coder-0.5b"]:
        common = ["-m", model, "-t", str(args.threads), "--n-prompt", str(args.n_prompt), "--n-gen", str(args.n_gen),
                  *[a for c in args.concurrency for a in ("-c", str(c))]]
        ours = _child(sys.executable, "ours", common)
        llama = _child(args.llama_python, "llama", common) if Path(args.llama_python).exists() else None
        rows.append({"model": model, "ours": ours, "llama": llama})
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    for row in rows:
        ours, seq = row["ours"], row["ours"]["sequential"]
        llama_seq = row["llama"]["sequential"] if row["llama"] else None
        print(f"\n{row['model']}  ({args.n_prompt}-token prompts, {args.n_gen} tokens each, {args.threads} threads)")
        print(f"  one at a time: ours {seq:.1f} tok/s" + (f", llama.cpp {llama_seq:.1f} tok/s" if llama_seq else ""))
        for key, tps in ours["batched"].items():
            kv, c = key.split("/")
            extra = f"  {tps / llama_seq:.2f}x llama.cpp one at a time" if llama_seq else ""
            print(f"  {c:>3} at once ({kv:>4} KV): {tps:7.1f} tok/s  {tps / seq:.2f}x ours one at a time{extra}")
        kvb = ours["kv_bytes_per_seq"]
        print("  KV per sequence: " + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in kvb.items()))


def _child(python: str, which: str, args: list[str]) -> dict:
    out = subprocess.run([python, __file__, "--child", which, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
