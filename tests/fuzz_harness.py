#!/usr/bin/env python3
"""Fuzz the model loader, the tokenizer, the forward pass, chat rendering and KV-state loading with hostile
files (tests/hostile_inputs.py), and count what happens per mutation category.

Each case runs in a worker process (a small pool, one case at a time each) under an address-space limit of
its start-up size + 2 GiB; the parent gives each case 10 s. So a case ends as one of:

    ok                  loaded and ran (2 greedy tokens + chat rendering), and was not known to be malformed
    clean               refused with one of the project's errors and a clear one-line message
    accepted_malformed  known malformed (e.g. a tensor shape contradicting the hyperparameters), yet it ran
    unclear             a project error whose message is not a clear one-liner (numpy/internal wording)
    uncaught            any other exception type (TypeError, IndexError, RecursionError, ...)
    giant               MemoryError: asked for more than the 2 GiB allowed
    hang                took more than 10 s (the worker is killed and replaced)
    crash               the worker died (segfault, abort)
    corrupted           (state files) refused, but the KV cache changed

Models load with the optional NaN/inf scan of block scales (GGUF_RUNTIME_CHECK_WEIGHTS=1) unless
--no-check-weights: without it a NaN scale is refused only when it reaches the forward pass's output.

    python tests/fuzz_harness.py --gguf-cases 3000 --state-cases 200 --seed 19 --jobs 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

CASE_SECONDS = 10.0
MEMORY_BYTES = 2 << 30
OUTCOMES = ("ok", "clean", "accepted_malformed", "unclear", "uncaught", "giant", "hang", "crash", "corrupted")
FAILURES = ("accepted_malformed", "unclear", "uncaught", "giant", "hang", "crash", "corrupted")

# (category, base model) -> share of the GGUF cases; "real" is SmolLM2-135M (its header, vocab and weights)
MIX = {
    ("truncation", "llama"): 200, ("truncation", "real"): 120,
    ("bitflip", "llama"): 250, ("bitflip", "qwen2"): 150, ("bitflip", "real"): 80,
    ("huge_count", "llama"): 250, ("huge_count", "qwen2"): 100, ("huge_count", "real"): 40,
    ("bad_value", "llama"): 160, ("bad_value", "qwen2"): 80,
    ("wrong_type", "llama"): 250, ("wrong_type", "qwen2"): 100, ("wrong_type", "real"): 40,
    ("shape", "llama"): 250, ("shape", "qwen2"): 130, ("shape", "real"): 20,
    ("vocab", "llama"): 220, ("vocab", "qwen2"): 80, ("vocab", "real"): 30,
    ("nonfinite", "llama"): 150, ("nonfinite", "qwen2"): 90,
    ("template", "llama"): 0, ("not_a_file", "none"): 20,
}
# every hostile template runs on both tiny architectures (fixed, not sampled)
TEMPLATE_BASES = ("llama", "qwen2")

_UNCLEAR = re.compile(
    r"could not broadcast|cannot reshape|invalid literal|out of bounds|index out of range|unsupported operand|"
    r"has no attribute|not subscriptable|NoneType|Traceback|numba|codec can't|object is not|"
    r"takes \d+ positional|unhashable|must be real number|division by zero|maximum recursion", re.I)


@dataclass
class Spec:
    index: int
    category: str
    base: str
    template_index: int | None = None


def plan(n_gguf: int, n_state: int, seed: int) -> list[Spec]:
    from hostile_inputs import HOSTILE_TEMPLATES
    specs: list[Spec] = []
    n_templates = len(HOSTILE_TEMPLATES) * len(TEMPLATE_BASES)
    weights = {k: v for k, v in MIX.items() if v}
    total = sum(weights.values())
    n_rest = max(0, n_gguf - n_templates)
    for (category, base), w in weights.items():
        specs += [Spec(0, category, base) for _ in range(round(n_rest * w / total))]
    specs += [Spec(0, "template", base, i) for base in TEMPLATE_BASES for i in range(len(HOSTILE_TEMPLATES))]
    specs += [Spec(0, "state", "llama") for _ in range(n_state)]
    random.Random(seed).shuffle(specs)
    for i, s in enumerate(specs):
        s.index = i
    return specs


# ---- worker ---------------------------------------------------------------------------------------------------

class Worker:
    """The in-process side: base models built once, then one case per request."""

    def __init__(self, seed: int, workdir: Path):
        os.environ.setdefault("NUMBA_NUM_THREADS", "1")
        from hostile_inputs import GGUFModel, header_fields
        from tiny_model import write_tiny_model
        from gguf_runtime.catalog import model_path
        self.seed = seed
        self.dir = workdir
        self.bases: dict[str, GGUFModel] = {}
        self.raw: dict[str, bytes] = {}
        self.fields = {}
        for arch in ("llama", "qwen2"):
            p = write_tiny_model(workdir / f"base-{arch}.gguf", arch=arch, seed=1)
            self.bases[arch] = GGUFModel.read(p)
        self.bases["real"] = GGUFModel.read(model_path("smollm2-135m"))
        for name, m in self.bases.items():
            self.raw[name] = m.to_bytes()
            self.fields[name] = header_fields(self.raw[name])
        self._state_llm = None
        self._state_bytes = b""
        self.run_gguf(self._write(self.raw["llama"]), False)  # warm up: compile/load kernels
        self.run_gguf(self._write(self.raw["real"]), False)
        self._prepare_state()

    def _write(self, data: bytes) -> Path:
        path = self.dir / "case.gguf"
        path.write_bytes(data)
        return path

    def make_case(self, spec: Spec):
        import hostile_inputs as h
        rng = random.Random(f"{self.seed}/{spec.index}")
        base = self.bases.get(spec.base)
        raw = self.raw.get(spec.base)
        header_end = self.fields[spec.base][-1].offset + 16 if spec.base in self.fields else 0
        c = spec.category
        if c == "truncation":
            return h.mutate_truncate(raw, rng, header_end)
        if c == "bitflip":
            return h.mutate_bitflip(raw, rng, header_end)
        if c == "huge_count":
            return h.mutate_huge_field(raw, rng, self.fields[spec.base])
        if c == "bad_value":
            return h.mutate_bad_value(base, rng)
        if c == "wrong_type":
            return h.mutate_wrong_type(base, rng)
        if c == "shape":
            return h.mutate_shape(base, rng)
        if c == "vocab":
            return h.mutate_vocab(base, rng)
        if c == "nonfinite":
            return h.mutate_nonfinite(base, rng)
        if c == "template":
            return h.template_case(base, rng, spec.template_index)
        if c == "not_a_file":
            return h.special_path_case(rng)
        if c == "state":
            return h.mutate_state(self._state_bytes, rng)
        raise ValueError(f"unknown category {c}")

    def special_path(self, kind: str) -> Path:
        path = self.dir / f"special-{kind}"
        if path.exists() or path.is_symlink():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "directory":
            path.mkdir()
        elif kind == "device":
            return Path("/dev/zero")
        else:
            fifo = self.dir / "special-target-fifo"
            if not fifo.exists():
                os.mkfifo(fifo)
            path.symlink_to(fifo)
        return path

    def run_gguf(self, path: Path, must_reject: bool) -> dict:
        import warnings
        from gguf_runtime.api import LLM
        from gguf_runtime.gguf_file import GGUFFile
        from gguf_runtime.sampling import SamplingParams
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with GGUFFile(path):
                pass
            llm = LLM(str(path), n_ctx=128, n_threads=1)
            llm.generate("ab", SamplingParams(max_tokens=2, temperature=0.0))
            text = llm.render_chat([{"role": "user", "content": "hi"}])
            assert isinstance(text, str)
        return {"outcome": "accepted_malformed" if must_reject else "ok"}

    def _prepare_state(self) -> None:
        from gguf_runtime.api import LLM
        from gguf_runtime.sampling import SamplingParams
        llm = LLM(str(self.dir / "base-llama.gguf"), n_ctx=128, n_threads=1)
        for _ in llm.generate_stream("abcdefghij", SamplingParams(max_tokens=6, temperature=0.0)):
            pass
        path = self.dir / "good.state"
        llm.save_state(path)
        self._state_bytes = path.read_bytes()
        self._state_llm = llm
        self._good_state = path

    def _kv_digest(self) -> str:
        llm = self._state_llm
        d = hashlib.sha256()
        for group in llm.engine.kv.pool.groups:
            d.update(group.k.tobytes())
            d.update(group.v.tobytes())
        d.update(repr(llm.conversation_tokens).encode())
        return d.hexdigest()

    def run_state(self, path: Path, must_reject: bool) -> dict:
        from gguf_runtime.sampling import SamplingParams
        llm = self._state_llm
        llm.load_state(self._good_state)
        before = self._kv_digest()
        try:
            tokens = llm.load_state(path)
        except BaseException:
            if self._kv_digest() != before:
                return {"outcome": "corrupted", "message": "a refused state file changed the KV cache"}
            raise
        ids = list(tokens) + [1]
        for _ in llm.generate_stream(ids, SamplingParams(max_tokens=1, temperature=0.0)):
            pass
        return {"outcome": "accepted_malformed" if must_reject else "ok"}

    def run(self, spec: Spec) -> dict:
        case = self.make_case(spec)
        if case.special_path:
            path = self.special_path(case.special_path)
        else:
            path = self.dir / ("case.state" if spec.category == "state" else "case.gguf")
            path.write_bytes(case.data)
        sys.stdout.write("B " + json.dumps(case.description) + "\n")  # the clock starts now
        sys.stdout.flush()
        start = time.perf_counter()
        try:
            if spec.category == "state":
                result = self.run_state(path, case.must_reject)
            else:
                result = self.run_gguf(path, case.must_reject)
        except MemoryError:
            result = {"outcome": "giant", "type": "MemoryError", "message": ""}
        except BaseException as e:  # noqa: BLE001 - classifying every escape is the point
            result = classify(e)
            if result["outcome"] == "uncaught":
                result["where"] = traceback.format_exc().strip().splitlines()[-3][:200]
        result["seconds"] = round(time.perf_counter() - start, 3)
        result["description"] = case.description
        return result


def project_errors() -> tuple[type, ...]:
    """The exception types that are the project's answer to bad input (looked up by name: older code
    lacks some)."""
    import importlib
    names = [("gguf_runtime.gguf_file", "GGUFError"), ("gguf_runtime.config", "ConfigError"),
             ("gguf_runtime.tokenizer.vocab", "TokenizerError"), ("gguf_runtime.chat_template", "ChatTemplateError"),
             ("gguf_runtime.state", "StateFileError"), ("gguf_runtime.quants", "UnsupportedQuantError"),
             ("gguf_runtime.session", "ContextLengthError"), ("gguf_runtime.errors", "GGUFRuntimeError")]
    found = []
    for module, name in names:
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except ImportError:
            cls = None
        if isinstance(cls, type):
            found.append(cls)
    return tuple(found)


def classify(e: BaseException) -> dict:
    message = str(e)
    info = {"type": type(e).__name__, "message": message[:300]}
    if isinstance(e, project_errors()) or (isinstance(e, OSError) and getattr(e, "filename", None)):
        clear = message and "\n" not in message.strip() and len(message) <= 400 and not _UNCLEAR.search(message)
        info["outcome"] = "clean" if clear else "unclear"
    else:
        info["outcome"] = "uncaught"
    return info


def worker_main(seed: int) -> None:
    import resource
    workdir = Path(tempfile.mkdtemp(prefix="fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    try:
        worker = Worker(seed, workdir)
        vm = _vm_size()
        # mmaps of the case files (up to the real model's size) count as address space too
        limit = vm + MEMORY_BYTES + 2 * len(worker.raw["real"])
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        for line in sys.stdin:
            spec = Spec(**json.loads(line))
            result = worker.run(spec)
            sys.stdout.write(json.dumps(result) + "\n")
            sys.stdout.flush()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


# ---- parent ---------------------------------------------------------------------------------------------------

class WorkerProcess:
    def __init__(self, seed: int, cwd: Path, check_weights: bool = True):
        self.seed, self.cwd, self.check_weights = seed, cwd, check_weights
        self.proc: subprocess.Popen | None = None
        self._buffer = b""

    def start(self) -> None:
        env = dict(os.environ, NUMBA_NUM_THREADS="1", PYTHONPATH=str(self.cwd))
        if self.check_weights:  # the optional load-time scan of block scales (off by default: it reads the file)
            env["GGUF_RUNTIME_CHECK_WEIGHTS"] = "1"
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", "--seed", str(self.seed)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     cwd=self.cwd, env=env, text=True, bufsize=1, start_new_session=True)
        self._buffer = b""
        line = self._readline(600)
        if line != "READY":
            raise RuntimeError(f"fuzz worker did not start (got {line!r})")

    def _readline(self, timeout: float) -> str | None:
        """The worker's next line; None after `timeout` seconds, "" once it has exited. Reads the raw pipe
        (a buffered reader could hold a line that select() no longer sees)."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return ""
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode().strip()

    def kill(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
            self.proc = None

    def run(self, spec: Spec) -> dict:
        if self.proc is None:
            self.start()
        self.proc.stdin.write(json.dumps(spec.__dict__) + "\n")
        self.proc.stdin.flush()
        began = self._readline(120)  # building the case (copying the real model) is not timed
        if not began or not began.startswith("B "):
            return self._died("while building the case")
        description = json.loads(began[2:])
        line = self._readline(CASE_SECONDS)
        if line is None:
            self.kill()
            return {"outcome": "hang", "seconds": CASE_SECONDS, "description": description}
        if not line:
            return {**self._died(""), "description": description}
        return json.loads(line)

    def _died(self, when: str) -> dict:
        code = self.proc.wait()
        self.proc = None
        return {"outcome": "crash", "message": f"worker exited with {code} {when}".strip()}


@dataclass
class Report:
    counts: dict = field(default_factory=lambda: defaultdict(Counter))
    examples: dict = field(default_factory=lambda: defaultdict(list))
    seconds: float = 0.0

    def add(self, spec: Spec, result: dict) -> None:
        outcome = result["outcome"]
        self.counts[spec.category][outcome] += 1
        if outcome in FAILURES and len(self.examples[(spec.category, outcome)]) < 4:
            self.examples[(spec.category, outcome)].append(
                {"base": spec.base, **{k: result.get(k) for k in ("description", "type", "message", "where")}})

    def failures(self) -> int:
        return sum(c[o] for c in self.counts.values() for o in FAILURES)

    def table(self) -> str:
        cats = sorted(self.counts)
        head = ["category", "cases"] + list(OUTCOMES)
        rows = [[c, sum(self.counts[c].values())] + [self.counts[c][o] for o in OUTCOMES] for c in cats]
        total = ["total", sum(r[1] for r in rows)] + [sum(r[2 + i] for r in rows) for i in range(len(OUTCOMES))]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows + [total]]
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"counts": {c: dict(v) for c, v in self.counts.items()},
                "examples": {f"{c}/{o}": v for (c, o), v in self.examples.items()}, "seconds": self.seconds}


def run_campaign(specs: list[Spec], seed: int, jobs: int, cwd: Path, progress: bool = False,
                 check_weights: bool = True) -> Report:
    report = Report()
    lock = threading.Lock()
    queue = list(reversed(specs))
    start = time.perf_counter()

    def loop() -> None:
        worker = WorkerProcess(seed, cwd, check_weights)
        try:
            while True:
                with lock:
                    if not queue:
                        return
                    spec = queue.pop()
                result = worker.run(spec)
                with lock:
                    report.add(spec, result)
                    done = sum(sum(c.values()) for c in report.counts.values())
                    if progress and done % 100 == 0:
                        print(f"{done}/{len(specs)} cases, {time.perf_counter() - start:.0f} s, "
                              f"{report.failures()} failures", file=sys.stderr, flush=True)
        finally:
            worker.kill()

    threads = [threading.Thread(target=loop) for _ in range(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report.seconds = round(time.perf_counter() - start, 1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf-cases", type=int, default=3000)
    parser.add_argument("--state-cases", type=int, default=200)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--no-check-weights", action="store_true",
                        help="load without the NaN/inf scan of block scales (the default mode of LLM())")
    parser.add_argument("--only", help="run only this category (e.g. template)")
    parser.add_argument("--json", type=Path, help="write counts and failure examples here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.seed)
        return
    specs = [s for s in plan(args.gguf_cases, args.state_cases, args.seed) if args.only in (None, s.category)]
    report = run_campaign(specs, args.seed, args.jobs, Path.cwd(), progress=True,
                          check_weights=not args.no_check_weights)
    print(report.table())
    print(f"{len(specs)} cases in {report.seconds} s; {report.failures()} failures")
    for (category, outcome), examples in sorted(report.examples.items()):
        for ex in examples:
            print(f"  {category}/{outcome}: {json.dumps(ex)[:400]}")
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=1))
    sys.exit(1 if report.failures() else 0)


if __name__ == "__main__":
    main()
