#!/usr/bin/env python3
"""Time opening each fetched catalog model: open + all metadata + tensor index, ours vs gguf-py's GGUFReader.

Our reader: median of --runs opens in this process (imports already paid). Import cost is measured apart,
in fresh interpreters. gguf-py: one run per model by default (it takes seconds to a minute on big vocabularies).

    .venv/bin/python scripts/bench_open.py [--runs 7] [--gguf-py-runs 1] [--no-gguf-py] [MODEL ...]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from gguf_runtime.catalog import CATALOG, model_path  # noqa: E402
from gguf_runtime.fetch import is_fetched  # noqa: E402

IMPORTS = {  # label -> statement timed in a fresh interpreter
    "numpy": "import numpy",
    "numpy + gguf (gguf-py)": "import numpy, gguf",
    "gguf_runtime.gguf_file": "import gguf_runtime.gguf_file",
}


def import_seconds(statement: str, runs: int) -> float:
    """Median wall time of `statement` in fresh interpreters (interpreter start-up excluded)."""
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    times = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                  cwd=Path(__file__).resolve().parent.parent).stdout) for _ in range(runs)]
    return statistics.median(times)


def open_ours(path: Path) -> tuple[int, int]:
    from gguf_runtime.gguf_file import GGUFFile
    with GGUFFile(path) as g:
        return len(g.metadata), len(g.tensors)


def open_gguf_py(path: Path) -> tuple[int, int]:
    from gguf import GGUFReader
    reader = GGUFReader(path)
    return len(reader.fields) - 3, len(reader.tensors)  # minus its GGUF.version/tensor_count/kv_count


def timed(fn, path: Path, runs: int) -> tuple[float, tuple[int, int]]:
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn(path)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="catalog names (default: every fetched one)")
    parser.add_argument("--runs", type=int, default=7, help="opens per model with our reader (median)")
    parser.add_argument("--gguf-py-runs", type=int, default=1, help="opens per model with gguf-py")
    parser.add_argument("--no-gguf-py", action="store_true", help="skip gguf-py's GGUFReader")
    args = parser.parse_args()
    names = args.models or [name for name, m in CATALOG.items() if is_fetched(m)]
    console = Console(width=max(Console().width, 110))

    imports = Table("import (fresh process)", "median s", title="import cost", title_justify="left")
    for label, statement in IMPORTS.items():
        imports.add_row(label, f"{import_seconds(statement, 5):.3f}")
    console.print(imports)

    table = Table("model", "size MB", "keys", "tensors", "ours s (median)", "gguf-py s", "speed-up",
                  title="open + all metadata + tensor index", title_justify="left")
    for name in names:
        path = model_path(name)
        open_ours(path)  # warm the page cache and any lazy state before timing
        ours, (n_keys, n_tensors) = timed(open_ours, path, args.runs)
        theirs_text = speedup = "-"
        if not args.no_gguf_py:
            theirs, counts = timed(open_gguf_py, path, args.gguf_py_runs)
            assert counts == (n_keys, n_tensors), (counts, n_keys, n_tensors)
            theirs_text, speedup = f"{theirs:.2f}", f"{theirs / ours:.0f}x"
        table.add_row(name, f"{path.stat().st_size / 1e6:.0f}", str(n_keys), str(n_tensors), f"{ours:.3f}",
                      theirs_text, speedup)
        console.print(f"done: {name}", style="dim")
    console.print(table)


if __name__ == "__main__":
    main()
