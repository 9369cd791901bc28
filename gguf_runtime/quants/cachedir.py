"""Where numba caches the compiled kernels, dropping that cache when the kernel sources change, and loading
from it without preparing the compiler.

`point_numba_cache` runs when gguf_runtime.quants is imported (numba forces that: see quants/__init__.py);
the rest is part of gguf_runtime.runtime.setup(). An installed package cannot write next to its own sources, so the cache defaults to
~/.cache/gguf-runtime/numba (an explicit NUMBA_CACHE_DIR wins). numba checks only the timestamp of the file
that defines a cached function, but compiled code embeds the code it calls from other modules (the drivers in
kernels.py every module here; fused.py the barrier, attention and ops kernels), so a hash of every module
with compiled kernels decides whether the cached code may be reused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent
# the package's modules outside quants/ with compiled kernels (their cached code embeds each other's)
KERNEL_MODULES = ("attention.py", "fused.py", "ops.py", "sync.py")


def point_numba_cache() -> Path:
    """NUMBA_CACHE_DIR defaults to the user cache folder (an explicit setting wins); numba's live config follows
    when numba is imported already. Must run before the kernel modules are imported: numba fixes a cached
    function's cache location when the function is decorated."""
    if "NUMBA_CACHE_DIR" not in os.environ:
        os.environ["NUMBA_CACHE_DIR"] = str(Path.home() / ".cache" / "gguf-runtime" / "numba")
        if "numba" in sys.modules:  # imported before us: point its live config there too
            sys.modules["numba"].config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]
    return Path(os.environ["NUMBA_CACHE_DIR"])


def configure() -> Path:
    """Point numba at the cache folder and drop what it holds from other kernel sources."""
    cache_dir = point_numba_cache()
    _drop_if_stale(cache_dir)
    return cache_dir


def sources_digest() -> str:
    h = hashlib.sha256()
    for path in [*sorted(SOURCE_DIR.glob("*.py")), *(SOURCE_DIR.parent / name for name in KERNEL_MODULES)]:
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def package_cache_dirs(cache_dir: Path) -> tuple[Path, Path]:
    """numba's subdirectories (numba.core.caching's naming: folder name, hash of its path) for the functions
    defined here in quants/ and for those of the package's own kernel modules (KERNEL_MODULES)."""
    return tuple(cache_dir / f"{d.name}_{hashlib.sha1(str(d).encode()).hexdigest()}"
                 for d in (SOURCE_DIR, SOURCE_DIR.parent))


def _drop_if_stale(cache_dir: Path) -> None:
    """Both subdirectories go together: fused.py's cached kernel embeds ops.py's and quants/' code, and numba
    would reuse it after an edit of those files (it checks fused.py's timestamp only)."""
    subdirs = package_cache_dirs(cache_dir)
    marker = subdirs[0] / "sources.sha256"
    digest = sources_digest()
    try:
        if marker.read_text() == digest:
            return
    except OSError:
        pass
    try:
        for subdir in subdirs:
            shutil.rmtree(subdir, ignore_errors=True)
            subdir.mkdir(parents=True, exist_ok=True)
        marker.write_text(digest)
    except OSError:
        pass  # read-only or missing home: numba falls back to no caching, still correct


def load_cached_without_refresh() -> bool:
    """Make numba load cached machine code without first refreshing its compiler's registries.

    numba's Cache.load_overload calls target_context.refresh() before every load, and the first refresh
    imports and registers every lowering numba has (arrays, random, typed containers, jitclass, ...): about
    0.2 s and 10 MB of a 1.4 s start-up. Rebuilding cached code needs only the runtime (NRT) it links
    against (numba's caching notes: cached object code may use no symbols but the NRT's and system
    libraries'); a cache miss compiles, and the compiler refreshes the registries itself
    (CompilerBase.__init__), so nothing is skipped, only deferred to a compile. Written against numba 0.68's
    caching.Cache; leaves numba alone (returns False) when that class does not look as expected.
    """
    from numba.core import caching
    from numba.core.runtime import rtsys

    cache = caching.Cache
    if getattr(cache.load_overload, "_without_refresh", False):
        return True
    if not all(hasattr(cache, name) for name in ("_load_overload", "_guard_against_spurious_io_errors")):
        return False

    def load_overload(self, sig, target_context):
        rtsys.initialize(target_context)  # what cached code links against; a no-op once done
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)

    load_overload._without_refresh = True
    load_overload.__doc__ = cache.load_overload.__doc__
    cache.load_overload = load_overload
    return True
