#!/usr/bin/env python3
"""Serving throughput and latency: N concurrent streaming chat clients against `gguf-runtime serve`, and in
the same run against llama-cpp-python's own server (`llama_cpp.server`) on the same file and threads.

    .venv/bin/python scripts/bench_serve.py [-m smollm2-135m] [-t 2] [-c 1 -c 4 -c 8 -c 16] [--n-gen 64]
        [--requests 2] [--llama-python .fixtures-venv/bin/python] [--llama-max-clients 8]
        [--llama-server .fixtures-venv/llama-server/build/bin/llama-server] [--llama-server-slots 8] [--json]

The clients are the official `openai` client, a test tool: `make dev` (or `make test`) installs it.

Each of N clients sends `--requests` streaming chat requests one after another (distinct questions, greedy,
at most n-gen tokens). Reported per server and N: aggregate generated tokens/s (all tokens / wall time of the
round), p50 / p95 time to first token, p50 / p95 inter-token latency (gaps between streamed chunks).
Tokens are counted from `usage` where the server reports it in the stream, else as content chunks. Both
servers run with the same thread count; each runs alone while it is measured. A shared machine is noisy:
compare ratios within one run.

A request fails when it raises (HTTP error, dropped connection, timeout), when its stream ends without a
finish_reason, or when it streams no token. Failed requests are reported per round (how many, and the first
error's text) and left out of the throughput and latency figures; if any request failed, no ratio is printed
and the script exits 1, since a server that drops work would otherwise look faster.

llama_cpp.server runs one sequence at a time (one Llama object behind a lock): more clients only queue. It is
started with --interrupt_requests False, because its default ends a running stream (a bare [DONE], no
finish_reason) as soon as another request arrives; and measured at the -c values up to --llama-max-clients.
The fixtures venv needs its server dependencies (`make fixtures-env` installs them).

llama.cpp's own `llama-server` (continuous batching over `--llama-server-slots` slots, `-np 8` by default, each
slot with --n-ctx positions) is measured at every -c value when it is built: `make llama-server` compiles it from
the llama.cpp sources inside the pinned llama-cpp-python sdist (PyPI), with the fixtures' CPU flags (~7 min on
2 cores). Where it is not built the script says so and measures the others.
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
    """One streamed chat request: its time to first token, the gaps between chunks and its token count, or
    {"error": text} if it failed (see the module docstring)."""
    t0 = time.perf_counter()
    kwargs = {"stream_options": {"include_usage": True}} if usage else {}
    times, tokens, finish = [], None, None
    try:
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"Write a short story about {topic}."}],
            temperature=0, max_tokens=n_gen, stream=True, **kwargs)
        async for chunk in stream:
            if chunk.choices:
                if chunk.choices[0].delta.content:
                    times.append(time.perf_counter())
                finish = chunk.choices[0].finish_reason or finish
            if getattr(chunk, "usage", None):
                tokens = chunk.usage.completion_tokens
    except Exception as e:  # the client's errors (HTTP status, connection, timeout) are all failures here
        return {"error": f"{type(e).__name__}: {e}"}
    if finish is None:
        return {"error": f"the stream ended without a finish_reason after {len(times)} content chunks"}
    if not times:
        return {"error": f"no token streamed (finish_reason {finish!r})"}
    return {"ttft": times[0] - t0, "gaps": [b - a for a, b in zip(times, times[1:])],
            "tokens": tokens if tokens is not None else len(times)}


async def round_of(url: str, model: str, n_clients: int, n_requests: int, n_gen: int, usage: bool) -> dict:
    import openai

    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0, timeout=600)

    async def client_loop(c: int) -> list[dict]:
        return [await one_request(client, model, TOPICS[(c * n_requests + r) % len(TOPICS)], n_gen, usage)
                for r in range(n_requests)]

    try:
        warm = await one_request(client, model, "warm-up", 8, usage)
        if "error" in warm:
            sys.exit(f"{url}: the warm-up request failed: {warm['error']}")
        t0 = time.perf_counter()
        results = [r for rs in await asyncio.gather(*(client_loop(c) for c in range(n_clients))) for r in rs]
        wall = time.perf_counter() - t0
    finally:
        await client.close()
    failed = [r["error"] for r in results if "error" in r]
    done = [r for r in results if "error" not in r]
    ttft = sorted(r["ttft"] for r in done)
    gaps = sorted(g for r in done for g in r["gaps"])
    tokens = sum(r["tokens"] for r in done)
    return {"clients": n_clients, "requests": len(results), "failed": len(failed),
            "first_error": failed[0] if failed else None, "tokens": tokens, "seconds": wall,
            "tok_s": tokens / wall, "ttft_p50": _pct(ttft, 50), "ttft_p95": _pct(ttft, 95),
            "itl_p50": _pct(gaps, 50), "itl_p95": _pct(gaps, 95)}


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def bench_server(name: str, cmd: list[str], port: int, model: str, args, concurrency: list[int], usage: bool,
                 env=None) -> list[dict]:
    proc = start(cmd, port, env)
    try:
        rows = []
        for n in concurrency:
            row = asyncio.run(round_of(f"http://127.0.0.1:{port}", model, n, args.requests, args.n_gen, usage))
            row["server"] = name
            rows.append(row)
            print(_line(row), flush=True)
        return rows
    finally:
        stop(proc)


def _line(r: dict) -> str:
    line = (f"{r['server']:<22} N={r['clients']:>2}  {r['tok_s']:7.1f} tok/s  TTFT p50 {r['ttft_p50'] * 1e3:7.0f} ms "
            f"p95 {r['ttft_p95'] * 1e3:7.0f} ms  ITL p50 {r['itl_p50'] * 1e3:6.1f} ms p95 {r['itl_p95'] * 1e3:6.1f} ms"
            f"  ({r['tokens']} tokens in {r['seconds']:.1f} s)")
    if r["failed"]:
        line += (f"\n{'':<22} FAILED {r['failed']} of {r['requests']} requests (left out above); "
                 f"first: {r['first_error']}")
    return line


def summary(rows: list[dict]) -> int:
    """The ratios, or (any request failed) the failures instead; the exit status."""
    failures = [r for r in rows if r["failed"]]
    if failures:
        print("no ratios: requests failed in " + ", ".join(f"{r['server']} N={r['clients']} ({r['failed']} of "
                                                           f"{r['requests']})" for r in failures))
        return 1
    ours = {r["clients"]: r for r in rows if r["server"] == "gguf-runtime serve"}
    others = {}
    for r in rows:
        if r["server"] != "gguf-runtime serve":
            others.setdefault(r["server"], {})[r["clients"]] = r
    if 1 in ours:
        for n, r in ours.items():
            versus = "".join(f"  vs {name} {r['tok_s'] / theirs[n]['tok_s']:.2f}x"
                             for name, theirs in others.items() if n in theirs)
            print(f"N={n:>2}: {r['tok_s'] / ours[1]['tok_s']:.2f}x our single-client throughput{versus}")
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", default="smollm2-135m")
    ap.add_argument("-t", "--threads", type=int, default=os.cpu_count())
    ap.add_argument("-c", "--concurrency", type=int, action="append")
    ap.add_argument("--n-gen", type=int, default=64)
    ap.add_argument("--n-ctx", type=int, default=1024)
    ap.add_argument("--requests", type=int, default=2, help="requests per client, one after another")
    ap.add_argument("--llama-python", default=str(ROOT / ".fixtures-venv" / "bin" / "python"))
    ap.add_argument("--llama-max-clients", type=int, default=8,
                    help="measure llama_cpp.server at the -c values up to this (it serves one request at a time)")
    ap.add_argument("--llama-server", default=str(ROOT / ".fixtures-venv" / "llama-server" / "build" / "bin" / "llama-server"),
                    help="llama.cpp's llama-server binary (make llama-server)")
    ap.add_argument("--llama-server-slots", type=int, default=8, help="its -np")
    ap.add_argument("--skip-llama", action="store_true", help="measure neither llama_cpp.server nor llama-server")
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
                         port, path.name, args, args.concurrency, usage=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    llama_concurrency = [n for n in args.concurrency if n <= args.llama_max_clients]
    if not args.skip_llama and llama_concurrency:
        port = free_port()
        rows += bench_server("llama_cpp.server", [args.llama_python, "-m", "llama_cpp.server", "--model", str(path),
                                                  "--port", str(port), "--n_threads", str(args.threads),
                                                  "--n_threads_batch", str(args.threads), "--n_ctx", str(args.n_ctx),
                                                  "--interrupt_requests", "False"],
                             port, path.name, args, llama_concurrency, usage=False)
    if not args.skip_llama and Path(args.llama_server).is_file():
        port = free_port()
        slots = args.llama_server_slots
        rows += bench_server(f"llama-server -np {slots}", [args.llama_server, "-m", str(path), "--host", "127.0.0.1",
                                                           "--port", str(port), "-t", str(args.threads), "-tb",
                                                           str(args.threads), "-np", str(slots), "-c",
                                                           str(args.n_ctx * slots), "--no-webui"],
                             port, path.name, args, args.concurrency, usage=True)
    elif not args.skip_llama:
        print(f"llama-server: not measured, {args.llama_server} is not built (make llama-server)")
    print()
    status = summary(rows)
    if args.json:
        print(json.dumps(rows, indent=1))
    sys.exit(status)


if __name__ == "__main__":
    main()
