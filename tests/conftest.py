"""Shared fixtures. Real-model fixtures fail loudly when the model is missing: `make test` fetches them."""

from __future__ import annotations

from pathlib import Path

import pytest

from gguf_runtime.catalog import CATALOG, model_path
from gguf_runtime.fetch import is_fetched

FIXTURES = Path(__file__).parent / "fixtures"


def pytest_configure(config):
    """Drop cached kernels compiled from other sources, as runtime.setup() does for every real entry point:
    numba itself checks only the file defining each kernel, so after an edit of simd.py (say) the tests would
    run the drivers' stale compiled code."""
    from gguf_runtime.quants import cachedir

    cachedir.configure()


def _require(name: str) -> Path:
    if not is_fetched(CATALOG[name]):
        pytest.fail(f"model {name} is not fetched; run `make models-all` (or `gguf-runtime pull {name}`)",
                    pytrace=False)
    return model_path(name)


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return _require("smollm2-135m")


@pytest.fixture(scope="session")
def qwen05_path() -> Path:
    return _require("qwen2.5-coder-0.5b")


@pytest.fixture(scope="session")
def qwen15_path() -> Path:
    return _require("qwen2.5-coder-1.5b")


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    return _require("gemma-3-270m")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES
