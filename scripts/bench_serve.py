#!/usr/bin/env python3
"""Serving throughput and latency: N concurrent streaming chat clients against `gguf-runtime serve`, and in
the same run against llama-cpp-python's own server (`llama_cpp.server`) on the same file and threads.

    .venv/bin/python scripts/bench_serve.py [-m smollm2-135m] [-t 2] [-c 1 -c 4 -c 8 -c 16] [--n-gen 64]
        [--requests 2] [--llama-python .fixtures-venv/bin/python] [--json]

Each of N clients sends `--requests` streaming chat requests one after another (distinct questions, greedy,
at most n-gen tokens). Reported per server and N: aggregate generated tokens/s (all tokens / wall time of the
round), p50 / p95 time to first token, p50 / p95 inter-token latency (gaps between streamed chunks).
Tokens are counted from `usage` where the server reports it in the stream, else as content chunks. Both
servers run with the same thread count; each runs alone while it is measured. A shared machine is noisy:
compare ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOPICS = ["a lighthouse", "a lost key", "a robot gardener", "the first snow", "a night train", "an old map",
          "a dragon who bakes", "a quiet library", "a desert storm", "a paper boat", "a city of glass",
          "a talking cat", "a broken clock", "the last bus", "a mountain village", "a secret tunnel"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], port: int, env: dict | None = None) -> subprocess.Popen:
    """Start a server and wait until it answers GET /v1/models."""
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True,
                            env=env, cwd=ROOT)
    proc.log = log
    import urllib.request

    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            sys.exit(f"{cmd[2:4]} exited: {log.read()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2).read()
            return proc
        except OSError:
            time.sleep(0.5)
    sys.exit(f"{cmd} did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


async def one_request(client, model: str, topic: str, n_gen: int, usage: bool) -> dict:
    t0 = time.perf_counter()
    kwargs = {"stream_options": {"include_usage": True}} if usage else {}
    stream = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": f"Write a short story about {topic}."}],
        temperature=0, max_tokens=n_gen, stream=True, **kwargs)
    times, tokens = [], None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            times.append(time.perf_counter())
        if getattr(chunk, "usage", None):
            tokens = chunk.usage.completion_tokens
    return {"ttft": times[0] - t0 if times else None, "gaps": [b - a for a, b in zip(times, times[1:])],
            "tokens": tokens if tokens is not None else len(times)}


async def round_of(url: str, model: str, n_clients: int, n_requests: int, n_gen: int, usage: bool) -> dict:
    import openai

    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0, timeout=600)

    async def client_loop(c: int) -> list[dict]:
        return [await one_request(client, model, TOPICS[(c * n_requests + r) % len(TOPICS)], n_gen, usage)
                for r in range(n_requests)]

    try:
        await one_request(client, model, "warm-up", 8, usage)
        t0 = time.perf_counter()
        results = [r for rs in await asyncio.gather(*(client_loop(c) for c in range(n_clients))) for r in rs]
        wall = time.perf_counter() - t0
    finally:
        await client.close()
    ttft = sorted(r["ttft"] for r in results if r["ttft"] is not None)
    gaps = sorted(g for r in results for g in r["gaps"])
    tokens = sum(r["tokens"] for r in results)
    return {"clients": n_clients, "tokens": tokens, "seconds": wall, "tok_s": tokens / wall,
            "ttft_p50": _pct(ttft, 50), "ttft_p95": _pct(ttft, 95), "itl_p50": _pct(gaps, 50),
            "itl_p95": _pct(gaps, 95)}


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def bench_server(name: str, cmd: list[str], port: int, model: str, args, usage: bool, env=None) -> list[dict]:
    proc = start(cmd, port, env)
    try:
        rows = []
        for n in args.concurrency:
            row = asyncio.run(round_of(f"http://127.0.0.1:{port}", model, n, args.requests, args.n_gen, usage))
            row["server"] = name
            rows.append(row)
            print(_line(row), flush=True)
        return rows
    finally:
        stop(proc)


def _line(r: dict) -> str:
    return (f"{r['server']:<22} N={r['clients']:>2}  {r['tok_s']:7.1f} tok/s  TTFT p50 {r['ttft_p50'] * 1e3:7.0f} ms "
            f"p95 {r['ttft_p95'] * 1e3:7.0f} ms  ITL p50 {r['itl_p50'] * 1e3:6.1f} ms p95 {r['itl_p95'] * 1e3:6.1f} ms"
            f"  ({r['tokens']} tokens in {r['seconds']:.1f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", default="smollm2-135m")
    ap.add_argument("-t", "--threads", type=int, default=os.cpu_count())
    ap.add_argument("-c", "--concurrency", type=int, action="append")
    ap.add_argument("--n-gen", type=int, default=64)
    ap.add_argument("--n-ctx", type=int, default=1024)
    ap.add_argument("--requests", type=int, default=2, help="requests per client, one after another")
    ap.add_argument("--llama-python", default=str(ROOT / ".fixtures-venv" / "bin" / "python"))
    ap.add_argument("--skip-llama", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    args.concurrency = args.concurrency or [1, 4, 8, 16]
    sys.path.insert(0, str(ROOT))
    from gguf_runtime.catalog import resolve_model

    path = resolve_model(args.model)
    max_n = max(args.concurrency)
    rows = []
    port = free_port()
    rows += bench_server("gguf-runtime serve", [sys.executable, "-m", "gguf_runtime", "serve", "-m", str(path),
                                                "--port", str(port), "-t", str(args.threads), "--n-ctx",
                                                str(args.n_ctx), "--max-num-seqs", str(max_n)],
                         port, path.name, args, usage=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if not args.skip_llama:
        port = free_port()
        rows += bench_server("llama_cpp.server", [args.llama_python, "-m", "llama_cpp.server", "--model", str(path),
                                                  "--port", str(port), "--n_threads", str(args.threads),
                                                  "--n_threads_batch", str(args.threads), "--n_ctx", str(args.n_ctx)],
                             port, path.name, args, usage=False)
    ours = {r["clients"]: r for r in rows if r["server"] == "gguf-runtime serve"}
    theirs = {r["clients"]: r for r in rows if r["server"] == "llama_cpp.server"}
    print()
    if 1 in ours:
        for n, r in ours.items():
            versus = f"  vs llama_cpp.server {r['tok_s'] / theirs[n]['tok_s']:.2f}x" if n in theirs else ""
            print(f"N={n:>2}: {r['tok_s'] / ours[1]['tok_s']:.2f}x our single-client throughput{versus}")
    if args.json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
