"""Save and load one sequence's KV cache (llama.cpp's --prompt-cache / llama_state_save_file analogue).

File layout, little-endian:
    b"GGRTKV01"  u32 header length  header (UTF-8 JSON)  tokens int32[n]  K uint8[n, L, H_kv, row_bytes]  V (same)
The header names the model it was computed with and the cache type; a file for another model, another
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

from .kv import KVCache

MAGIC = b"GGRTKV01"
MAX_HEADER = 1 << 16




def save_state(cache: KVCache, fingerprint: str, path: str | os.PathLike) -> None:
    """Write the cache's tokens and their K/V rows (raw, in the pool's type) to path, atomically."""
    pool, n = cache.pool, cache.n
    n_layers, _, n_kv, _, row_bytes = pool.k.shape
    header = json.dumps({"version": 1, "model": fingerprint, "kv_type": pool.kv_type, "n_tokens": n,
                         "n_layers": n_layers, "n_kv_heads": n_kv, "row_bytes": row_bytes}).encode()
    blocks, slots = cache.addresses(np.arange(n))
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(MAGIC + struct.pack("<I", len(header)) + header)
        f.write(np.asarray(cache.tokens, np.int32).tobytes())
        for storage in (pool.k, pool.v):
            f.write(np.ascontiguousarray(storage[:, blocks, :, slots].reshape(n, -1)).tobytes())  # (n, L·H_kv·rb)
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
            n_layers, _, n_kv, _, row_bytes = pool.k.shape
            expect = {"version": 1, "model": fingerprint, "kv_type": pool.kv_type, "n_layers": n_layers,
                      "n_kv_heads": n_kv, "row_bytes": row_bytes}
            for key, want in expect.items():
                if header.get(key) != want:
                    raise StateFileError(f"{path}: saved with {key}={header.get(key)!r}, this run has {want!r}")
            n = header.get("n_tokens")
            if not isinstance(n, int) or not 0 <= n <= cache.n_ctx:
                raise StateFileError(f"{path}: {n!r} tokens do not fit a context of {cache.n_ctx}")
            row = n_layers * n_kv * row_bytes
            if size != len(MAGIC) + 4 + header_len + 4 * n + 2 * n * row:
                raise StateFileError(f"{path}: the file is {size} bytes, its header describes another size "
                                     f"(truncated or corrupt)")
            tokens = np.frombuffer(f.read(4 * n), np.int32)
            if n and (tokens.min() < 0 or tokens.max() >= n_vocab):
                raise StateFileError(f"{path}: token ids outside the vocabulary of {n_vocab}")
            k = np.frombuffer(f.read(n * row), np.uint8).reshape(n, n_layers, n_kv, row_bytes)
            v = np.frombuffer(f.read(n * row), np.uint8).reshape(n, n_layers, n_kv, row_bytes)
    except OSError as e:
        raise StateFileError(f"cannot read state file {path}: {e.strerror or e}") from None
    cache.truncate(0)
    cache.prepare(n)
    blocks, slots = cache.addresses(np.arange(n))
    pool.k[:, blocks, :, slots] = k
    pool.v[:, blocks, :, slots] = v
    cache.commit(tokens.tolist())
    return n


def _parse_header(raw: bytes, path: Path) -> dict:
    try:
        header = json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict):
        raise StateFileError(f"{path}: the header is not valid JSON")
    return header
