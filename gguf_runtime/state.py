"""Save and load one sequence's KV cache (llama.cpp's --prompt-cache / llama_state_save_file analogue).

File layout, little-endian:
    b"GGRTKV01"  u32 header length  header (UTF-8 JSON)  tokens int32[n]  K uint8[n, L, H_kv, row_bytes]  V (same)
A pool whose sliding-window layers hold only their windows saves zero rows for the positions they let go of,
named by the header's "sliding_lost" ranges. The header names the model it was computed with and the cache type; a file for another model, another
cache type, a bigger context, or one whose size does not match its header is refused before anything large
is read, so a truncated or hostile file costs nothing and changes nothing.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

from .errors import StateFileError  # noqa: F401  (re-exported: its old home)
from .kv import KV_TYPES, KVCache
from .quants import get_qtype

MAGIC = b"GGRTKV01"
MAX_HEADER = 1 << 16
MAX_HEADER_NESTING = 8  # the header is one flat object; json.loads recurses per level


def _nesting_depth(raw: bytes) -> int:
    """How deep brackets nest in a JSON text (brackets inside strings count too: an upper bound)."""
    depth = deepest = 0
    for byte in raw.translate(None, _NOT_BRACKETS):
        depth += 1 if byte in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")




def save_state(cache: KVCache, fingerprint: str, path: str | os.PathLike) -> None:
    """Write the cache's tokens and their K/V rows (raw, in the pool's type) to path, atomically."""
    pool, n = cache.pool, cache.n
    k, v, lost = cache.saved_rows()  # (n, n_layers, H_kv, row_bytes) each
    _, n_layers, n_kv, row_bytes = k.shape
    header = {"version": 1, "model": fingerprint, "kv_type": pool.kv_type, "n_tokens": n, "n_layers": n_layers,
              "n_kv_heads": n_kv, "row_bytes": row_bytes}
    if lost:
        header["sliding_lost"] = [list(r) for r in lost]  # positions whose sliding-layer rows are zeros
    header = json.dumps(header).encode()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(MAGIC + struct.pack("<I", len(header)) + header)
        f.write(np.asarray(cache.tokens, np.int32).tobytes())
        for rows in (k, v):
            f.write(np.ascontiguousarray(rows.reshape(n, -1)).tobytes())  # (n, L·H_kv·rb)
    os.replace(tmp, path)


def load_state(cache: KVCache, fingerprint: str, path: str | os.PathLike, n_vocab: int) -> int:
    """Replace the cache's content with the file's; returns the number of tokens loaded."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(len(MAGIC) + 4)
            if len(head) < len(MAGIC) + 4 or head[:len(MAGIC)] != MAGIC:
                raise StateFileError(f"{path}: not a gguf-runtime state file")
            (header_len,) = struct.unpack("<I", head[len(MAGIC):])
            if header_len > MAX_HEADER:
                raise StateFileError(f"{path}: header of {header_len} bytes is implausible")
            header = _parse_header(f.read(header_len), path)
            pool = cache.pool
            n_layers, n_kv, row_bytes = pool.n_layers, pool.n_kv_heads, pool.qtype.row_bytes(pool.head_dim)
            expect = {"version": 1, "model": fingerprint, "kv_type": pool.kv_type, "n_layers": n_layers,
                      "n_kv_heads": n_kv, "row_bytes": row_bytes}
            for key, want in expect.items():
                got = header.get(key)
                if type(got) is not type(want) or got != want:  # `true` is not version 1
                    raise StateFileError(f"{path}: saved with {key}={got!r}, this run has {want!r}")
            n = header.get("n_tokens")
            if type(n) is not int or not 0 <= n <= cache.n_ctx:
                raise StateFileError(f"{path}: {n!r} tokens do not fit a context of {cache.n_ctx}")
            lost = header.get("sliding_lost", [])
            if not (type(lost) is list and len(lost) <= 8 and all(
                    type(r) is list and len(r) == 2 and all(type(x) is int for x in r) and 0 <= r[0] < r[1] <= n
                    for r in lost)):
                raise StateFileError(f"{path}: sliding_lost {lost!r} is not a list of ranges of its positions")
            row = n_layers * n_kv * row_bytes
            if size != len(MAGIC) + 4 + header_len + 4 * n + 2 * n * row:
                raise StateFileError(f"{path}: the file is {size} bytes, its header describes another size "
                                     f"(truncated or corrupt)")
            tokens = np.frombuffer(f.read(4 * n), np.int32)
            if n and (tokens.min() < 0 or tokens.max() >= n_vocab):
                raise StateFileError(f"{path}: token ids outside the vocabulary of {n_vocab}")
            k = np.frombuffer(f.read(n * row), np.uint8).reshape(n, n_layers, n_kv, row_bytes)
            v = np.frombuffer(f.read(n * row), np.uint8).reshape(n, n_layers, n_kv, row_bytes)
            _check_finite(k, v, pool.kv_type, path)
    except OSError as e:
        raise StateFileError(f"cannot read state file {path}: {e.strerror or e}") from None
    try:
        cache.restore(tokens.tolist(), k, v, tuple(sorted(tuple(r) for r in lost)))
    except ValueError as e:
        raise StateFileError(f"{path}: {e}") from None
    return n


def _check_finite(k: np.ndarray, v: np.ndarray, kv_type: str, path: Path) -> None:
    """NaN/inf rows would poison every later attention step: refuse them here, where they enter. Float caches
    are checked whole; quantized ones by their f16 block scales (the first two bytes of each block)."""
    if kv_type in ("f32", "f16"):
        dtype = np.float32 if kv_type == "f32" else np.float16
        rows = [k.view(dtype), v.view(dtype)]
    else:
        block_bytes = get_qtype(KV_TYPES[kv_type]).type_size
        rows = [x.reshape(-1, block_bytes)[:, :2].copy().view(np.float16) for x in (k, v)]
    if not all(np.isfinite(r).all() for r in rows):
        raise StateFileError(f"{path}: the saved K/V rows hold NaN or infinite values (corrupt file)")


def _parse_header(raw: bytes, path: Path) -> dict:
    if _nesting_depth(raw) > MAX_HEADER_NESTING:
        raise StateFileError(f"{path}: the header nests deeper than {MAX_HEADER_NESTING} levels")
    try:
        header = json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict):
        raise StateFileError(f"{path}: the header is not valid JSON")
    return header
