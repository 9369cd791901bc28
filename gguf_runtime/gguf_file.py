"""Read a GGUF file (llama.cpp's model format): all metadata and the tensor index, from one read-only mmap.

Errors: a path that cannot be opened (missing, a directory, no permission) raises the usual `OSError`
subclass from `open()`; a FIFO, socket or device is refused with `GGUFError` before opening it (a FIFO would
block `open()`); anything wrong with the file's *bytes* (including an empty file) raises `GGUFError`,
whose message says what is wrong and where (byte offset, key or tensor name). No other exception escapes
parsing, and nothing is allocated before checking that the file is large enough to hold it.

Block and type sizes of the tensor types come from gguf-py's `GGML_QUANT_SIZES` (see ggml_constants.py).
"""

from __future__ import annotations

import codecs
import math
import mmap
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import GGUFError  # noqa: F401  (re-exported: its old home)
from .ggml_constants import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
ALIGNMENT_KEY = "general.alignment"
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_TENSOR_NAME_BYTES = 63  # llama.cpp keeps names in char[GGML_MAX_NAME = 64], NUL included
MAX_ARRAY_NESTING = 8  # llama.cpp reads no nested arrays at all; this bounds recursion on hostile input
INT64_MAX = 2**63 - 1

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

_SCALAR_STRUCTS: dict[int, struct.Struct] = {
    GGUFValueType.UINT8: struct.Struct("<B"),
    GGUFValueType.INT8: struct.Struct("<b"),
    GGUFValueType.UINT16: struct.Struct("<H"),
    GGUFValueType.INT16: struct.Struct("<h"),
    GGUFValueType.UINT32: struct.Struct("<I"),
    GGUFValueType.INT32: struct.Struct("<i"),
    GGUFValueType.FLOAT32: struct.Struct("<f"),
    GGUFValueType.BOOL: struct.Struct("<B"),
    GGUFValueType.UINT64: struct.Struct("<Q"),
    GGUFValueType.INT64: struct.Struct("<q"),
    GGUFValueType.FLOAT64: struct.Struct("<d"),
}
_ARRAY_DTYPES: dict[int, np.dtype] = {
    GGUFValueType.UINT8: np.dtype("<u1"),
    GGUFValueType.INT8: np.dtype("<i1"),
    GGUFValueType.UINT16: np.dtype("<u2"),
    GGUFValueType.INT16: np.dtype("<i2"),
    GGUFValueType.UINT32: np.dtype("<u4"),
    GGUFValueType.INT32: np.dtype("<i4"),
    GGUFValueType.FLOAT32: np.dtype("<f4"),
    GGUFValueType.BOOL: np.dtype("<u1"),  # stored as one byte; turned into np.bool_ after checking
    GGUFValueType.UINT64: np.dtype("<u8"),
    GGUFValueType.INT64: np.dtype("<i8"),
    GGUFValueType.FLOAT64: np.dtype("<f8"),
}
# The fewest bytes one value of each type occupies: bounds element counts before reading them.
_MIN_VALUE_BYTES: dict[int, int] = {
    **{t: s.size for t, s in _SCALAR_STRUCTS.items()},
    GGUFValueType.STRING: 8,  # u64 length
    GGUFValueType.ARRAY: 12,  # u32 element type + u64 count
}
_MIN_KV_BYTES = 8 + 4 + 1  # key length, value type, smallest value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 8 + 4 + 8  # name length, n_dims, one dim, type, offset

_QUANT_SIZES: dict[int, tuple[int, int]] = {int(t): sizes for t, sizes in GGML_QUANT_SIZES.items()}
_TENSOR_DTYPES: dict[int, np.dtype] = {
    GGMLQuantizationType.F32: np.dtype("<f4"),
    GGMLQuantizationType.F16: np.dtype("<f2"),
    GGMLQuantizationType.BF16: np.dtype("<u2"),  # numpy has no bfloat16: the raw bits
}




def ggml_type_name(ggml_type: int) -> str:
    """"Q4_K", "F32", ...; "type N" for an id gguf-py does not know."""
    try:
        return GGMLQuantizationType(ggml_type).name
    except ValueError:
        return f"type {ggml_type}"


def value_type_name(value_type: int) -> str:
    """"uint32", "string", "array", ...; "type N" for an unknown id."""
    try:
        return GGUFValueType(value_type).name.lower()
    except ValueError:
        return f"type {value_type}"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    ggml_type: int  # gguf.GGMLQuantizationType value
    shape: tuple[int, ...]  # numpy order (outermost first) = reversed ggml ne
    offset: int  # absolute byte offset in the file
    n_bytes: int

    @property
    def type_name(self) -> str:
        return ggml_type_name(self.ggml_type)

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


class GGUFFile:
    """A parsed GGUF file. Metadata arrays and tensor data are read-only views into one mmap."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        _check_regular_file(self.path)
        # O_NONBLOCK: should the path turn into a FIFO between the check and the open, open() still returns
        fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with open(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise GGUFError(f"{self.path}: not a regular file")
            self.file_size = info.st_size
            if self.file_size == 0:
                raise GGUFError(f"{self.path}: empty file, not a GGUF file")
            self._mm: mmap.mmap | None = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            parsed = _Parser(self._mm, self.file_size).parse()
        except GGUFError as e:
            self.close()
            raise GGUFError(f"{self.path}: {e}") from None
        except BaseException:
            self.close()
            raise
        self.version: int = parsed.version
        self.alignment: int = parsed.alignment
        self.data_offset: int = parsed.data_offset
        self.metadata: dict[str, Any] = parsed.metadata
        self.metadata_types: dict[str, int] = parsed.metadata_types
        self.metadata_array_types: dict[str, int] = parsed.metadata_array_types
        self.tensors: dict[str, TensorInfo] = parsed.tensors

    @property
    def architecture(self) -> str:
        arch = self.metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise GGUFError(f"{self.path}: metadata key 'general.architecture' is missing or not a string")
        return arch

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def tensor_data(self, name: str) -> np.ndarray:
        """Zero-copy read-only view of a tensor's bytes.

        F32 -> float32 of `shape`; F16 -> float16; BF16 -> uint16 (raw bits); every other type (the
        block-quantized ones, and the rare I8..I64/F64) -> uint8 of shape (*shape[:-1], bytes per row).
        """
        if self._mm is None:
            raise ValueError(f"{self.path}: GGUFFile is closed")
        info = self.tensors[name]
        dtype = _TENSOR_DTYPES.get(info.ggml_type)
        if dtype is not None:
            return np.frombuffer(self._mm, dtype, info.n_elements, info.offset).reshape(info.shape)
        block_size, type_size = _QUANT_SIZES[info.ggml_type]
        row_bytes = info.shape[-1] // block_size * type_size
        data = np.frombuffer(self._mm, np.uint8, info.n_bytes, info.offset)
        return data.reshape(*info.shape[:-1], row_bytes)

    def close(self) -> None:
        """Unmap the file. Views handed out earlier keep the mapping alive until they are gone."""
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:
                pass  # numpy views still export the buffer; the mapping goes when they do
            self._mm = None

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"GGUFFile({str(self.path)!r}, version={self.version}, "
                f"{len(self.metadata)} keys, {len(self.tensors)} tensors)")


@dataclass
class _Parsed:
    version: int
    alignment: int
    data_offset: int
    metadata: dict[str, Any]
    metadata_types: dict[str, int]
    metadata_array_types: dict[str, int]
    tensors: dict[str, TensorInfo]


class _Parser:
    """One forward pass over the header, metadata and tensor infos; `pos` is the current byte offset."""

    def __init__(self, buf: mmap.mmap, size: int):
        self.buf = buf
        self.size = size
        self.pos = 0

    # -- primitives ------------------------------------------------------------------------------
    def need(self, n: int, what: str) -> None:
        left = self.size - self.pos
        if n > left:
            raise GGUFError(f"truncated file: {what} at offset {self.pos} needs {n} bytes, "
                            f"only {left} left")

    def u32(self, what: str) -> int:
        self.need(4, what)
        (v,) = _U32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return v

    def u64(self, what: str) -> int:
        self.need(8, what)
        (v,) = _U64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return v

    def string(self, what: str) -> str:
        start = self.pos
        n = self.u64(f"length of {what}")
        if n > self.size - self.pos:
            raise GGUFError(f"{what} at offset {start}: length {n} is larger than the "
                            f"{self.size - self.pos} bytes left in the file")
        raw = self.buf[self.pos:self.pos + n]
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise GGUFError(f"{what} at offset {start}: invalid UTF-8 ({e.reason} at byte {e.start})") from None

    # -- file structure --------------------------------------------------------------------------
    def parse(self) -> _Parsed:
        version, n_tensors, n_kv = self.header()
        metadata: dict[str, Any] = {}
        types: dict[str, int] = {}
        array_types: dict[str, int] = {}
        for i in range(n_kv):
            key_offset = self.pos
            key = self.string(f"key of metadata entry {i}")
            if key in metadata:
                raise GGUFError(f"duplicate metadata key {key!r} at offset {key_offset}")
            value_type = self.u32(f"value type of key {key!r}")
            if value_type == GGUFValueType.ARRAY:
                value, array_types[key] = self.array(f"key {key!r}", depth=1)
            else:
                value = self.value(value_type, f"key {key!r}")
            metadata[key] = value
            types[key] = value_type
        alignment = self.alignment(metadata, types)
        infos = [self.tensor_info(i) for i in range(n_tensors)]
        data_offset = -(-self.pos // alignment) * alignment
        tensors = self.place_tensors(infos, alignment, data_offset)
        return _Parsed(version, alignment, data_offset, metadata, types, array_types, tensors)

    def header(self) -> tuple[int, int, int]:
        self.need(4, "magic")
        magic = self.buf[0:4]
        if magic != GGUF_MAGIC:
            raise GGUFError(f"not a GGUF file: magic at offset 0 is {magic!r}, expected {GGUF_MAGIC!r}")
        self.pos = 4
        version = self.u32("version")
        if version & 0xFFFF == 0 and version != 0:
            swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
            raise GGUFError(f"big-endian GGUF file (version {swapped} read byte-swapped at offset 4) "
                            "is not supported; only little-endian files are")
        if version == 1:
            raise GGUFError("GGUF version 1 is not supported (it predates 64-bit counts); "
                            "re-convert the model with a current llama.cpp")
        if version not in SUPPORTED_VERSIONS:
            raise GGUFError(f"unsupported GGUF version {version} at offset 4; supported: "
                            f"{', '.join(map(str, SUPPORTED_VERSIONS))}")
        n_tensors = self.u64("tensor count")
        n_kv = self.u64("metadata key count")
        left = self.size - self.pos
        if n_kv > left // _MIN_KV_BYTES:
            raise GGUFError(f"metadata key count {n_kv} at offset 16 cannot fit in the {left} bytes left")
        if n_tensors > left // _MIN_TENSOR_INFO_BYTES:
            raise GGUFError(f"tensor count {n_tensors} at offset 8 cannot fit in the {left} bytes left")
        return version, n_tensors, n_kv

    def alignment(self, metadata: dict[str, Any], types: dict[str, int]) -> int:
        if ALIGNMENT_KEY not in metadata:
            return DEFAULT_ALIGNMENT
        if types[ALIGNMENT_KEY] != GGUFValueType.UINT32:
            raise GGUFError(f"key {ALIGNMENT_KEY!r} has type {value_type_name(types[ALIGNMENT_KEY])}, "
                            "expected uint32")
        alignment = metadata[ALIGNMENT_KEY]
        if alignment == 0 or alignment & (alignment - 1):
            raise GGUFError(f"key {ALIGNMENT_KEY!r} is {alignment}, not a nonzero power of two")
        return alignment

    # -- metadata values -------------------------------------------------------------------------
    def value(self, value_type: int, what: str) -> Any:
        if value_type == GGUFValueType.STRING:
            return self.string(f"string value of {what}")
        fmt = _SCALAR_STRUCTS.get(value_type)
        if fmt is None:
            raise GGUFError(f"{what} at offset {self.pos - 4}: unknown value type {value_type}")
        self.need(fmt.size, f"value of {what}")
        (v,) = fmt.unpack_from(self.buf, self.pos)
        self.pos += fmt.size
        return v != 0 if value_type == GGUFValueType.BOOL else v

    def array(self, what: str, depth: int) -> tuple[Any, int]:
        """An array value (after its ARRAY type tag): returns (value, element type)."""
        if depth > MAX_ARRAY_NESTING:
            raise GGUFError(f"{what} at offset {self.pos}: arrays nested deeper than {MAX_ARRAY_NESTING}")
        type_offset = self.pos
        elem_type = self.u32(f"array element type of {what}")
        count = self.u64(f"array length of {what}")
        min_bytes = _MIN_VALUE_BYTES.get(elem_type)
        if min_bytes is None:
            raise GGUFError(f"{what} at offset {type_offset}: unknown array element type {elem_type}")
        left = self.size - self.pos
        if count > left // min_bytes:
            raise GGUFError(f"{what} at offset {type_offset + 4}: array length {count} of "
                            f"{value_type_name(elem_type)} cannot fit in the {left} bytes left")
        if elem_type == GGUFValueType.STRING:
            return self.string_array(count, what), elem_type
        if elem_type == GGUFValueType.ARRAY:
            return [self.array(f"{what}[{i}]", depth + 1)[0] for i in range(count)], elem_type
        dtype = _ARRAY_DTYPES[elem_type]
        values = np.frombuffer(self.buf, dtype, count, self.pos)
        self.pos += count * dtype.itemsize
        if elem_type == GGUFValueType.BOOL:
            values = _as_bool(values)
        return values, elem_type

    def string_array(self, count: int, what: str) -> list[str]:
        """Walk the length-prefixed table once in a tight loop, then decode all strings in one go."""
        buf, pos = self.buf, self.pos
        last_prefix = self.size - 8
        starts: list[int] = []
        add = starts.append
        unpack = _U64.unpack_from
        for _ in range(count):
            if pos > last_prefix:
                break
            add(pos)
            pos += 8 + unpack(buf, pos)[0]
        if len(starts) < count or pos > self.size:
            self.raise_string_table_error(starts, count, pos, what)
        strings = _decode_string_table(buf, starts, pos)
        if strings is None:
            strings = self.decode_strings_one_by_one(starts, pos, what)
        self.pos = pos
        return strings

    def raise_string_table_error(self, starts: list[int], count: int, end: int, what: str) -> None:
        if end > self.size and starts:  # the last length read runs past the end
            i, start = len(starts) - 1, starts[-1]
            (n,) = _U64.unpack_from(self.buf, start)
            raise GGUFError(f"string {i} of {what} at offset {start}: length {n} is larger than the "
                            f"{self.size - start - 8} bytes left in the file")
        raise GGUFError(f"truncated file: string {len(starts)} of {count} in {what} at offset {end} "
                        f"needs 8 bytes for its length, only {self.size - end} left")

    def decode_strings_one_by_one(self, starts: list[int], end: int, what: str) -> list[str]:
        out = []
        ends = starts[1:] + [end]
        for i, (start, stop) in enumerate(zip(starts, ends)):
            try:
                out.append(self.buf[start + 8:stop].decode("utf-8"))
            except UnicodeDecodeError as e:
                raise GGUFError(f"string {i} of {what} at offset {start}: invalid UTF-8 "
                                f"({e.reason} at byte {e.start})") from None
        return out

    # -- tensors ---------------------------------------------------------------------------------
    def tensor_info(self, index: int) -> tuple[str, int, tuple[int, ...], int, int, int]:
        """(name, ggml type, numpy shape, offset relative to the data section, n_bytes, info offset)."""
        info_offset = self.pos
        name = self.string(f"name of tensor {index}")
        where = f"tensor {name!r} (info at offset {info_offset})"
        if len(name.encode()) > MAX_TENSOR_NAME_BYTES:
            raise GGUFError(f"{where}: name longer than {MAX_TENSOR_NAME_BYTES} bytes")
        n_dims = self.u32(f"n_dims of {where}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise GGUFError(f"{where}: n_dims {n_dims} out of range 1..{MAX_DIMS}")
        self.need(8 * n_dims, f"dims of {where}")
        ne = struct.unpack_from(f"<{n_dims}q", self.buf, self.pos)
        self.pos += 8 * n_dims
        if any(d <= 0 for d in ne):
            raise GGUFError(f"{where}: dims {list(ne)} must all be positive")
        n_elements = math.prod(ne)
        if n_elements > INT64_MAX:
            raise GGUFError(f"{where}: dims {list(ne)} overflow int64 ({n_elements} elements)")
        ggml_type = self.u32(f"type of {where}")
        sizes = _QUANT_SIZES.get(ggml_type)
        if sizes is None:
            raise GGUFError(f"{where}: unknown tensor type id {ggml_type}")
        block_size, type_size = sizes
        if ne[0] % block_size:
            raise GGUFError(f"{where}: innermost dim {ne[0]} is not a multiple of the "
                            f"{ggml_type_name(ggml_type)} block size {block_size}")
        rel_offset = self.u64(f"data offset of {where}")
        n_bytes = n_elements // block_size * type_size
        return name, ggml_type, tuple(reversed(ne)), rel_offset, n_bytes, info_offset

    def place_tensors(self, infos, alignment: int, data_offset: int) -> dict[str, TensorInfo]:
        tensors: dict[str, TensorInfo] = {}
        for name, ggml_type, shape, rel_offset, n_bytes, info_offset in infos:
            where = f"tensor {name!r} (info at offset {info_offset})"
            if name in tensors:
                raise GGUFError(f"duplicate tensor name {name!r} (info at offset {info_offset})")
            if rel_offset % alignment:
                raise GGUFError(f"{where}: data offset {rel_offset} is not a multiple of the "
                                f"alignment {alignment}")
            offset = data_offset + rel_offset
            if offset + n_bytes > self.size:
                raise GGUFError(f"{where}: data [{offset}, {offset + n_bytes}) lies beyond the end of the "
                                f"file ({self.size} bytes)")
            tensors[name] = TensorInfo(name, ggml_type, shape, offset, n_bytes)
        _check_no_overlap(tensors.values())
        return tensors


def _check_regular_file(path: Path) -> None:
    """Refuse FIFOs, sockets and devices before open() (a FIFO blocks it until a writer appears). Missing
    paths and directories keep their OSError (FileNotFoundError, IsADirectoryError) for the caller."""
    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(21, "Is a directory", str(path))
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) \
            else "a socket" if stat.S_ISSOCK(mode) else "not a regular file"
        raise GGUFError(f"{path}: {kind}, not a GGUF file (only regular files can be read)")


def _check_no_overlap(tensors) -> None:
    previous = None
    for t in sorted((t for t in tensors if t.n_bytes), key=lambda t: t.offset):
        if previous is not None and t.offset < previous.offset + previous.n_bytes:
            raise GGUFError(f"tensor {t.name!r} data at offset {t.offset} overlaps tensor "
                            f"{previous.name!r} at [{previous.offset}, {previous.offset + previous.n_bytes})")
        previous = t


def _as_bool(raw: np.ndarray) -> np.ndarray:
    """GGUF bools are bytes; any nonzero byte is true (as in llama.cpp). Zero-copy for 0/1 bytes."""
    if raw.size == 0 or raw.max() <= 1:
        return raw.view(np.bool_)
    values = raw != 0
    values.flags.writeable = False
    return values


def _decode_string_table(buf, starts: list[int], end: int) -> list[str] | None:
    """Decode every string of a length-prefixed table with one UTF-8 decode and one split.

    The 8-byte length prefixes are overwritten with zero bytes in a private copy; if no string holds a
    zero byte itself, splitting on eight zeros recovers the strings exactly, and the strict decode
    still checks each string's UTF-8 on its own (a zero byte cannot continue a multi-byte sequence).
    Returns None when that does not hold, so the caller decodes one by one (and locates bad UTF-8).
    """
    count = len(starts)
    if count == 0:
        return []
    first = starts[0]
    table = np.frombuffer(buf, np.uint8, end - first, first).copy()
    prefixes = np.array(starts, dtype=np.int64)
    prefixes -= first
    for k in range(8):
        table[prefixes + k] = 0
    if table.size - np.count_nonzero(table) != 8 * count:
        return None
    try:
        text, _ = codecs.utf_8_decode(memoryview(table), "strict", True)
    except UnicodeDecodeError:
        return None
    strings = text.split("\x00" * 8)
    del strings[0]  # the table starts with a prefix
    return strings
