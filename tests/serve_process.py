"""`gguf-runtime serve` in a subprocess, for the tests that talk to a real server (test_server.py,
test_webpage.py): started on a port it picks itself (`--port 0`; the URL it prints names the port, so two
test modules never race for one), stopped with SIGTERM, and its Prometheus metrics read back."""

from __future__ import annotations

import re
import selectors
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

START_TIMEOUT = 600  # a cold numba cache compiles the kernels first
_METRIC = re.compile(r"^gguf_runtime_(\w+) (\S+)$", re.M)


class ServerProcess:
    """A running server: `url` (http://127.0.0.1:PORT), `proc`, and its stderr kept in a file (`log`)."""

    def __init__(self, model: Path, *args: str, env: dict | None = None):
        self.log_file = tempfile.NamedTemporaryFile("w+", prefix="serve-", suffix=".log")
        self.log = Path(self.log_file.name)
        self.proc = subprocess.Popen([sys.executable, "-m", "gguf_runtime", "serve", "-m", str(model),
                                      "--port", "0", *args], stdout=subprocess.PIPE, stderr=self.log_file,
                                     stdin=subprocess.DEVNULL, text=True, env=env)
        self.url = self._wait_for_url()

    def _wait_for_url(self) -> str:
        selector = selectors.DefaultSelector()
        selector.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if selector.select(timeout=1.0):
                if match := re.search(r"at (http://\S+)/v1", self.proc.stdout.readline()):
                    return match.group(1)
            if self.proc.poll() is not None:
                pytest.fail(f"the server exited with {self.proc.returncode}: {self.read_log()[-3000:]}",
                            pytrace=False)
        self.proc.kill()
        pytest.fail(f"the server printed no URL in {START_TIMEOUT} s", pytrace=False)

    def read_log(self) -> str:
        self.log_file.seek(0)
        return self.log_file.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()


def parse_metrics(text: str) -> dict[str, float]:
    """The Prometheus samples without labels, by name with the gguf_runtime_ prefix dropped."""
    return {name: float(value) for name, value in _METRIC.findall(text)}
