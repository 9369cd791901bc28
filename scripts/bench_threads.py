#!/usr/bin/env python3
"""Thread scaling against llama.cpp on a many-core machine that has neither the models nor a network.

The models are random-weight files with a real model's metadata (tokenizer included), tensor names, shapes
and quantization types: written as F16, then quantized by llama.cpp's own `llama_model_quantize`. Speed does
not depend on the weights' values, so the table below is the real models' speed without carrying them.
Each cell runs each runtime in a fresh process (scripts/bench.py's children) on the same token ids: a
256-token prefill from an empty cache (prefix caching off), then 128 greedy decode steps.

    # here, where the real models are: their shapes and metadata, the code, gguf's wheel, llama.cpp's build
    .venv/bin/python scripts/bench_threads.py carry .perfcarry --llama avx512=.fixtures-venv/lib/python3.11/site-packages \\
        --llama avx2=/tmp/llama-avx2
    # there (the device tool carries .perfcarry): build the models, measure, print the table
    python3 .perfcarry/scripts/bench_threads.py run .perfcarry --out $OUT -t 1 2 4 8 16
    # several versions side by side (each DIR under .perfcarry holds a gguf_runtime), one llama.cpp run per cell
    python3 .perfcarry/scripts/bench_threads.py run .perfcarry --out $OUT --code before=before --code after=after

`--llama NAME=DIR` gives a directory holding llama-cpp-python's `llama_cpp` package (a ctypes library, so
one build serves any Python 3); `run` takes the fastest build this CPU can execute (NAME avx512 needs the
AVX-512 F/BW/VL/VNNI flags, which a build made with the Makefile's fixtures flags on such a machine uses).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHAPES = {"smollm2-135m": "SmolLM2-135M-Instruct.Q4_1.gguf",
          "qwen2.5-coder-1.5b": "Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf"}
# llama_ftype of the real file's general.file_type (llama.h): what llama_model_quantize is asked for
FTYPES = {2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 15: "Q4_K_M", 17: "Q5_K_M"}
AVX512_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512_vnni")
N_PROMPT = 256
SEED = 17


# ------------------------------------------------------------------------------------------ here: carry

def write_spec(model: Path, out: Path) -> None:
    """The model's metadata (every key with its GGUF value types) and tensors (name, ggml shape, type) as
    gzipped JSON: a few MB for a 150k vocabulary instead of the weights."""
    import gguf

    reader = gguf.GGUFReader(model)
    kv = [{"key": k, "types": [int(t) for t in f.types], "value": _plain(f.contents())}
          for k, f in reader.fields.items() if not k.startswith("GGUF.")]
    tensors = [{"name": t.name, "ne": [int(n) for n in t.shape], "type": t.tensor_type.name}
               for t in reader.tensors]
    with gzip.open(out, "wt") as f:
        json.dump({"source": model.name, "kv": kv, "tensors": tensors}, f)


def _plain(value):
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value.item() if hasattr(value, "item") else value


def carry(dest: Path, llama: list[str]) -> None:
    """Fill `dest` with what `run` needs on a machine without the models or a network."""
    from gguf_runtime.catalog import resolve_model

    if dest.exists():
        shutil.rmtree(dest)
    for part in ("gguf_runtime", "scripts"):
        shutil.copytree(ROOT / part, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "specs").mkdir()
    for name in SHAPES:
        write_spec(resolve_model(name), dest / "specs" / f"{name}.json.gz")
    wheels = dest / "wheels"  # gguf (our runtime reads its type tables), diskcache (llama_cpp imports it)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d",
                    str(wheels), "gguf", "diskcache"], check=True)
    for item in llama:
        name, _, site = item.partition("=")
        shutil.copytree(Path(site) / "llama_cpp", dest / "llama" / name / "llama_cpp",
                        ignore=shutil.ignore_patterns("__pycache__", "*.a", "include", "cmake", "pkgconfig"))
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"{dest}: {size / 2**20:.1f} MiB")


# ------------------------------------------------------------------------------------------- there: run

def build_f16(spec: dict, path: Path) -> None:
    """A random-weight F16 GGUF with the spec's metadata and tensors (1-D tensors stay F32, as llama.cpp
    keeps norms and biases)."""
    import gguf
    import numpy as np

    rng = np.random.default_rng(SEED)
    # random values by table lookup: 16-bit random indices are ~10x cheaper to draw than normals
    table16 = (rng.standard_normal(1 << 16, dtype=np.float32) * np.float32(0.02)).astype(np.float16)
    arch = next(kv["value"] for kv in spec["kv"] if kv["key"] == "general.architecture")
    writer = gguf.GGUFWriter(path, arch)
    for kv in spec["kv"]:
        key, types, value = kv["key"], [gguf.GGUFValueType(t) for t in kv["types"]], kv["value"]
        if key == "general.architecture":
            continue
        if key == "general.file_type":
            value = int(gguf.LlamaFileType.MOSTLY_F16)
        writer.add_key_value(key, value, types[0], types[1] if len(types) > 1 else None)
    for t in spec["tensors"]:
        shape = tuple(reversed(t["ne"]))  # numpy order
        if len(shape) == 1:
            data = (np.float32(1) + rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02))
        else:
            data = table16[rng.integers(0, 1 << 16, size=shape, dtype=np.uint16)]
        writer.add_tensor(t["name"], data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def quantize(spec: dict, f16: Path, out: Path) -> dict:
    """llama.cpp quantizes the F16 file to the real file's type; the token embedding and output keep the
    real file's types too (llama.cpp's defaults for them changed over versions). Returns the type counts of
    the result next to the real file's."""
    import ctypes

    import gguf
    import llama_cpp

    file_type = next(kv["value"] for kv in spec["kv"] if kv["key"] == "general.file_type")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{FTYPES[file_type]}")
    params.nthread = os.cpu_count() or 1
    types = {t["name"]: t["type"] for t in spec["tensors"]}
    params.token_embedding_type = int(gguf.GGMLQuantizationType[types["token_embd.weight"]])
    if "output.weight" in types:
        params.output_tensor_type = int(gguf.GGMLQuantizationType[types["output.weight"]])
    rc = llama_cpp.llama_model_quantize(str(f16).encode(), str(out).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({f16}) returned {rc}")
    made = {t.name: t.tensor_type.name for t in gguf.GGUFReader(out).tensors}
    return {"types_match": made == types, "mismatched": sorted(n for n in types if made.get(n) != types[n])}


def read_spec(carried: Path, name: str) -> dict:
    """A model's spec as `carry` wrote it (write_spec)."""
    return json.loads(gzip.open(carried / "specs" / f"{name}.json.gz", "rt").read())


def quantize_in_child(carried: Path, name: str, f16: Path, out: Path) -> dict:
    """quantize(), in a process of its own. A process that has loaded llama.cpp makes the children it starts
    afterwards slower, and itself too (our Qwen 1.5B prefill at one thread, the box, 2026-12-07: 45-47 tok/s
    from a clean parent, 32-38 from one that had imported llama_cpp, 27 in `run` when it quantized in-process),
    so the measuring processes never load it. llama.cpp's log goes to stderr as it comes."""
    wheels = [str(w) for w in sorted((carried / "wheels").glob("*.whl"))]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(pick_llama(carried)), *wheels]))
    made = subprocess.run([sys.executable, str(Path(__file__).resolve()), "quantize", str(carried), name, str(f16),
                           str(out)], check=True, stdout=subprocess.PIPE, text=True, env=env)
    return json.loads(made.stdout.strip().splitlines()[-1])


def pick_llama(carried: Path) -> Path:
    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    builds = sorted(p.name for p in (carried / "llama").iterdir())
    if "avx512" in builds and all(f in flags for f in AVX512_FLAGS):
        return carried / "llama" / "avx512"
    return carried / "llama" / ("avx2" if "avx2" in builds else builds[0])


def run(carried: Path, out: Path, threads: list[int], models: list[str], reps: int, budget_s: float,
        variants: list[str], ttft: bool = True) -> None:
    """variants: NAME=DIR, each DIR holding a gguf_runtime package (e.g. before and after a change), all
    measured in each cell beside one llama.cpp run; default: the carried package alone, as "ours"."""
    start = time.perf_counter()
    work = Path(os.environ.get("BENCH_WORK", "/tmp/bench-threads"))
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    llama = pick_llama(carried)
    code = dict(v.partition("=")[::2] for v in variants) or {"ours": str(carried)}

    # the carried wheels are pure Python: importable straight from the .whl (a zip), no pip needed there
    wheels = [str(w) for w in sorted((carried / "wheels").glob("*.whl"))]

    def env_for(code_dir: str, cache: str) -> dict:
        env = dict(os.environ, NUMBA_CACHE_DIR=str(work / "numba" / cache), PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join([code_dir, str(carried), str(llama), *wheels, os.environ.get("PYTHONPATH", "")])
        return env

    envs = {name: env_for(str((carried / d).resolve()), name) for name, d in code.items()}
    llama_env = env_for(str((carried / next(iter(code.values()))).resolve()), "llama")  # bench.py imports our catalog
    sys.path[:0] = [str(carried), str(llama), *wheels]
    import numpy as np

    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu": _cpu_name(), "cpus": os.cpu_count(),
              "llama_build": llama.name, "variants": list(code), "models": {}, "cells": []}
    files = {}
    for name in models:
        spec = read_spec(carried, name)
        t0 = time.perf_counter()
        f16, q = work / f"{name}.f16.gguf", work / f"{name}.gguf"
        build_f16(spec, f16)
        check = quantize_in_child(carried, name, f16, q)
        f16.unlink()
        files[name] = q
        vocab = next(len(kv["value"]) for kv in spec["kv"] if kv["key"] == "tokenizer.ggml.tokens")
        ids = np.random.default_rng(SEED).integers(0, vocab, N_PROMPT).tolist()
        (work / f"{name}.ids").write_text(",".join(map(str, ids)))
        report["models"][name] = {"source": spec["source"], "mb": q.stat().st_size / 2**20,
                                  "build_s": round(time.perf_counter() - t0, 1), **check}
        print(f"{name}: {report['models'][name]}", flush=True)
    # compile each version's kernels for every model, the versions side by side, outside the timings
    t0 = time.perf_counter()
    procs = {v: subprocess.Popen(" && ".join(f"{sys.executable} -m gguf_runtime warmup {files[m]}" for m in models),
                                 shell=True, env=envs[v], stdout=subprocess.PIPE, text=True) for v in code}
    for v, proc in procs.items():
        report.setdefault("warmup", {})[v] = {"log": proc.communicate()[0][-3000:], "rc": proc.returncode}
    report["warmup_s"] = round(time.perf_counter() - t0, 1)
    print(f"warm-up (compile) {report['warmup_s']} s", flush=True)
    sys.path.insert(0, str(carried / "scripts"))
    from bench import run_child, ttft_llama, ttft_ours

    first = models[0]
    if ttft:
        report["ttft"] = {"model": first}
        for v in code:
            os.environ.update(envs[v])  # bench.py's time-to-first-token children take the environment as it is
            report["ttft"][v] = sorted(ttft_ours(str(files[first]), 1, cold=False)[0] for _ in range(5))[2]
            with open(out / f"importtime-{v}.txt", "w") as f:  # where the warm start-up goes
                subprocess.run([sys.executable, "-X", "importtime", "-m", "gguf_runtime", "complete", "-m",
                                str(files[first]), "-n", "1", "--temperature", "0", "Hello"],
                               stdout=subprocess.DEVNULL, stderr=f)
        report["ttft"]["llama"] = sorted(ttft_llama(sys.executable, str(files[first]), 1) for _ in range(5))[2]
        print(f"time to first token, {first}, warm, 1 thread (median of 5): {report['ttft']}", flush=True)

    for n in sorted(threads, reverse=True):  # the many-thread cells first: they are the point, and cheap
        for name in models:
            if time.perf_counter() - start > budget_s:
                print(f"budget spent: skipping {name} at {n} threads", flush=True)
                continue
            cell = {"model": name, "threads": n}
            for who, env in [*envs.items(), ("llama", llama_env)]:
                try:
                    cell[who] = run_child(sys.executable, "llama" if who == "llama" else "ours", str(files[name]), n,
                                          reps, str(work / f"{name}.ids"), env)
                except subprocess.CalledProcessError as e:
                    cell[who] = {"error": (e.stderr or "")[-2000:]}
            report["cells"].append(cell)
            print(format_cell(cell, list(code)), flush=True)
            (out / "bench_threads.json").write_text(json.dumps(report, indent=1))
    print(format_table(report))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return os.uname().machine


def _pair(cell: dict | None, who: str, key: str) -> str:
    ours, ref = (cell or {}).get(who, {}).get(key), (cell or {}).get("llama", {}).get(key)
    if ours is None or ref is None:
        return "-" if cell is None else "error"
    return f"{ours:.1f} / {ref:.1f} ({ours / ref:.2f}x)"


def format_cell(cell: dict, variants: list[str]) -> str:
    return f"{cell['model']} t={cell['threads']}: " + "  ".join(
        f"[{v}] decode {_pair(cell, v, 'decode_tps')} prefill {_pair(cell, v, 'prefill_tps')}" for v in variants)


def format_table(report: dict) -> str:
    """One markdown table per code version: decode and prefill tok/s, ours / llama.cpp (ratio)."""
    models = list(report["models"])
    lines = [f"{report['cpu']}, {report['cpus']} CPUs, llama.cpp build {report['llama_build']}, {report['date']}"]
    for v in report["variants"]:
        lines += ["", f"{v}:", "| threads | " + " | ".join(f"{m} decode | {m} prefill" for m in models) + " |",
                  "|---" * (1 + 2 * len(models)) + "|"]
        for n in sorted({c["threads"] for c in report["cells"]}):
            row = [str(n)]
            for m in models:
                cell = next((c for c in report["cells"] if c["threads"] == n and c["model"] == m), None)
                row += [_pair(cell, v, "decode_tps"), _pair(cell, v, "prefill_tps")]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("carry", help="collect the code, model specs, wheels and llama.cpp builds into DEST")
    c.add_argument("dest", type=Path)
    c.add_argument("--llama", action="append", default=[], metavar="NAME=SITE_PACKAGES",
                   help="a llama-cpp-python build (repeatable: avx512=..., avx2=...)")
    r = sub.add_parser("run", help="build the models from CARRIED and print the table")
    r.add_argument("carried", type=Path)
    r.add_argument("--out", type=Path, default=Path("."))
    r.add_argument("-t", "--threads", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    r.add_argument("-m", "--model", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    r.add_argument("--reps", type=int, default=1)
    r.add_argument("--budget-s", type=float, default=540, help="start no new cell after this many seconds")
    r.add_argument("--no-ttft", action="store_true", help="skip the time-to-first-token runs")
    r.add_argument("--code", action="append", default=[], metavar="NAME=DIR",
                   help="a gguf_runtime version to measure (DIR relative to CARRIED; repeatable)")
    qz = sub.add_parser("quantize")  # run's child: quantize one model with llama.cpp, print the type check
    qz.add_argument("carried", type=Path)
    qz.add_argument("name")
    qz.add_argument("f16", type=Path)
    qz.add_argument("out", type=Path)
    args = ap.parse_args()
    if args.cmd == "quantize":
        print(json.dumps(quantize(read_spec(args.carried, args.name), args.f16, args.out)))
    elif args.cmd == "carry":
        sys.path.insert(0, str(ROOT))
        carry(args.dest.resolve(), args.llama)
    else:
        run(args.carried.resolve(), args.out, args.threads, args.model, args.reps, args.budget_s, args.code,
            ttft=not args.no_ttft)


if __name__ == "__main__":
    main()
