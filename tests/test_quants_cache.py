"""The numba cache location and its invalidation, and `gguf-runtime warmup`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from gguf import GGMLQuantizationType as GT

from gguf_runtime.cli import main
from gguf_runtime.quants import cachedir, kernels
from gguf_runtime.quants.registry import Q4_1, Q8_0
from gguf_runtime.quants.warm import warm_up

SHOW_CACHE_DIR = "import os, gguf_runtime.runtime as r; r.setup(); print(os.environ['NUMBA_CACHE_DIR'])"


def _run(env: dict) -> str:
    env = {k: v for k, v in env.items() if v is not None}
    return subprocess.run([sys.executable, "-c", SHOW_CACHE_DIR], env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def test_cache_dir_defaults_to_user_cache(tmp_path):
    env = dict(os.environ, HOME=str(tmp_path), NUMBA_CACHE_DIR=None)
    assert _run(env) == str(tmp_path / ".cache" / "gguf-runtime" / "numba")
    marker = cachedir.package_cache_dirs(tmp_path / ".cache" / "gguf-runtime" / "numba")[0] / "sources.sha256"
    assert marker.read_text() == cachedir.sources_digest()


def test_cache_dir_respects_user_setting(tmp_path):
    assert _run(dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "mine"))) == str(tmp_path / "mine")


def test_stale_cache_is_dropped(tmp_path, monkeypatch):
    """Compiled code from other kernel sources is removed, in quants/ and in the package's own kernel modules
    (fused.py's cached kernel embeds ops.py's code: an edit of ops.py alone must drop it); code from these
    sources is kept."""
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    quants_dir, package_dir = cachedir.package_cache_dirs(tmp_path)
    assert package_dir.name.startswith("gguf_runtime_") and quants_dir.name.startswith("quants_")
    stale = {quants_dir: "kernels._matmul_rows-1.py311.nbi", package_dir: "fused._layers-225.py311.nbi"}
    for sub, name in stale.items():
        sub.mkdir(parents=True)
        (sub / name).write_bytes(b"stale")
    (quants_dir / "sources.sha256").write_text("an older version")
    cachedir.configure()
    assert sorted(p.name for p in quants_dir.iterdir()) == ["sources.sha256"]
    assert not any(package_dir.iterdir())
    for sub, name in stale.items():
        (sub / name).write_bytes(b"current")
    cachedir.configure()
    assert all((sub / name).read_bytes() == b"current" for sub, name in stale.items())


def test_warmup_compiles_what_a_model_runs(smollm2_path: Path):
    from gguf_runtime import fused

    result = CliRunner().invoke(main, ["warmup", str(smollm2_path)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1].startswith(f"kernels ready for {smollm2_path}")
    assert fused._layers.overloads  # the fused decode step
    # the layer-by-layer prefill (40 tokens): Q4_1 layers by the integer GEMM, the Q8_0 output by rows
    assert Q4_1 in {key[0] for key in kernels.matmul_panels._entries}
    assert Q8_0 in {key[0] for key in kernels.matmul_rows._entries}


@pytest.mark.parametrize("t", [GT.Q4_0, GT.Q4_K], ids=["Q4_0", "Q4_K"])
def test_warm_up_compiles_the_integer_gemm(t):
    """Both GEMM forms (both start at GEMM_MIN_TOKENS, 4 tokens) are ready after warm-up."""
    warm_up(t)
    assert any(key[0] == t for key in kernels.matmul_panels._entries)


def test_warmup_reports_a_missing_model(tmp_path):
    result = CliRunner().invoke(main, ["warmup", str(tmp_path / "nope.gguf")])
    assert result.exit_code == 2
    assert "no such file" in result.output
