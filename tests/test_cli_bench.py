"""`gguf-runtime bench`: llama-bench-shaped results, as JSON and as a table (real subprocesses, tiny tests)."""

from __future__ import annotations

import json
import subprocess
import sys


def run_bench(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gguf_runtime", "bench", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def test_json_results(smollm2_path):
    result = run_bench("-m", smollm2_path, "-p", 8, "-n", 4, "-r", 2, "-t", 1, "--json")
    assert result.returncode == 0, result.stderr
    pp, tg = json.loads(result.stdout)
    assert (pp["test"], pp["n_tokens"], tg["test"], tg["n_tokens"]) == ("pp8", 8, "tg4", 4)
    for r in (pp, tg):
        assert r["model_type"] == "llama 135M Q4_1" and r["n_params"] == 134_515_008
        assert 0 < r["size_bytes"] < smollm2_path.stat().st_size
        assert r["threads"] == 1 and r["reps"] == 2 and len(r["samples"]) == 2
        assert all(s > 0 for s in r["samples"])
        assert min(r["samples"]) <= r["tokens_per_second"] <= max(r["samples"]) and r["stddev"] >= 0


def test_table_and_skipped_test(smollm2_path):
    result = run_bench("-m", smollm2_path, "-p", 0, "-n", 2, "-r", 1)
    assert result.returncode == 0, result.stderr
    header = result.stdout.splitlines()[1]
    for column in ("model", "size", "params", "test", "threads", "t/s"):
        assert column in header
    assert "tg2" in result.stdout and "pp" not in result.stdout and "± 0.00" in result.stdout
    assert "MiB" in result.stdout and "134.52 M" in result.stdout
