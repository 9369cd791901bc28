"""Typed reads of GGUF metadata keys: each value checked for its type and range before any code uses it.

A GGUF file is untrusted input, and its metadata values arrive as whatever type the file declares: a
`block_count` may be a string, an `rms_epsilon` NaN, a token list an array of floats. llama.cpp's
`llama_model_loader::get_key` refuses a key whose type is not the expected one; these readers do the same,
plus the range checks llama.cpp does after reading (layers, heads and sizes bounded), so every later
computation (buffer sizes, divisions, numba kernels) sees sane numbers. The message names the key:
"key qwen2.block_count: expected uint32, got string".

Integer keys accept any GGUF integer type whose value fits the range (converters have written int32 where
llama.cpp reads uint32); floats accept float32 and float64 (and integers); bools only bools.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .errors import MetadataError  # noqa: F401  (raised here; re-exported for callers)
from .gguf_file import GGUFError

UINT32_MAX = 2**32 - 1
INT32_MAX = 2**31 - 1

MISSING: Any = object()  # the `default` of a required key




def describe(value: Any) -> str:
    """The GGUF-ish type name of a parsed metadata value, for messages ("string", "float", "array of uint8")."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, np.integer)):
        return "integer"
    if isinstance(value, (float, np.floating)):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, np.ndarray):
        return f"array of {value.dtype.name}"
    if isinstance(value, (list, tuple)):
        inner = {describe(v) for v in value[:16]}
        return f"array of {inner.pop()}" if len(inner) == 1 else "array"
    return type(value).__name__


def _read(md: Mapping[str, Any], key: str, accepts: Callable[[Any], bool], expected: str) -> Any:
    """The key's value if present (MISSING if not), after checking its type with `accepts`."""
    value = md.get(key, MISSING)
    if value is not MISSING and not accepts(value):
        raise MetadataError(f"key {key}: expected {expected}, got {describe(value)}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def get_int(md: Mapping[str, Any], key: str, default: Any = MISSING, *, lo: int = 0, hi: int = UINT32_MAX,
            type_name: str = "uint32") -> Any:
    """An integer key in [lo, hi]; `default` (returned as is) when absent, MetadataError when required."""
    value = _read(md, key, _is_int, type_name)
    if value is MISSING:
        return _absent(key, default)
    value = int(value)
    if not lo <= value <= hi:
        raise MetadataError(f"key {key}: {value} is out of range [{lo}, {hi}]")
    return value


def get_float(md: Mapping[str, Any], key: str, default: Any = MISSING, *, lo: float = -math.inf,
              hi: float = math.inf, positive: bool = False, type_name: str = "float32") -> Any:
    """A finite float key in [lo, hi] (and > 0 with `positive`); integers are accepted as floats."""
    value = _read(md, key, _is_number, type_name)
    if value is MISSING:
        return _absent(key, default)
    value = float(value)
    if not math.isfinite(value):
        raise MetadataError(f"key {key}: {value} is not a finite number")
    if positive and value <= 0:
        raise MetadataError(f"key {key}: {value} must be greater than 0")
    if not lo <= value <= hi:
        raise MetadataError(f"key {key}: {value} is out of range [{lo}, {hi}]")
    return value


def get_bool(md: Mapping[str, Any], key: str, default: Any = MISSING) -> Any:
    value = _read(md, key, lambda v: isinstance(v, (bool, np.bool_)), "bool")
    return _absent(key, default) if value is MISSING else bool(value)


def get_str(md: Mapping[str, Any], key: str, default: Any = MISSING) -> Any:
    value = _read(md, key, lambda v: isinstance(v, str), "string")
    return _absent(key, default) if value is MISSING else value


def get_str_array(md: Mapping[str, Any], key: str, default: Any = MISSING) -> Any:
    """A string array key as a list of str."""
    # set(map(type, ...)) runs at C speed: this is checked on 150k-entry token and merge lists at every load
    value = _read(md, key, lambda v: isinstance(v, (list, tuple)) and set(map(type, v)) <= {str},
                  "array of string")
    if value is MISSING:
        return _absent(key, default)
    return value if isinstance(value, list) else list(value)


def get_num_array(md: Mapping[str, Any], key: str, length: int | None = None, default: Any = MISSING, *,
                  integer: bool = False) -> Any:
    """A numeric array key as a 1-D numpy array (float arrays must be finite), of exactly `length` items when
    given. `integer` asks for an integer array (e.g. token types)."""
    value = md.get(key, MISSING)
    if value is MISSING:
        return _absent(key, default)
    want = "array of int32" if integer else "array of float32"
    if isinstance(value, (list, tuple)):
        if any(isinstance(v, (str, bool, list, tuple)) for v in value):
            raise MetadataError(f"key {key}: expected {want}, got {describe(value)}")
        value = np.asarray(value)
    if not isinstance(value, np.ndarray) or value.ndim != 1 or value.dtype.kind not in "iuf" or (
            integer and value.dtype.kind == "f"):
        raise MetadataError(f"key {key}: expected {want}, got {describe(value)}")
    if length is not None and len(value) != length:
        raise MetadataError(f"key {key}: {len(value)} entries, expected {length}")
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        bad = int(np.flatnonzero(~np.isfinite(value))[0])
        raise MetadataError(f"key {key}: entry {bad} is {value[bad]}, not a finite number")
    return value


def _absent(key: str, default: Any) -> Any:
    if default is MISSING:
        raise MetadataError(f"key {key} is missing")
    return default


__all__ = ["MISSING", "MetadataError", "UINT32_MAX", "INT32_MAX", "describe", "get_int", "get_float", "get_bool", "get_str",
           "get_str_array", "get_num_array"]
