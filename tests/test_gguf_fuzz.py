"""GGUFFile on broken bytes: one hand-written file per validation error, then truncation, byte flips and
hostile lengths/counts/offsets from hypothesis. Whatever the bytes, only GGUFError may come out, quickly,
without allocating more than the file could hold."""

from __future__ import annotations

import itertools
import re
import struct
import tracemalloc
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from gguf import GGUFValueType as VT, GGMLQuantizationType as QT
from hypothesis import HealthCheck, given, settings, strategies as st

from gguf_runtime.gguf_file import GGUFError, GGUFFile

_SCALAR_FORMATS = {VT.UINT8: "<B", VT.INT8: "<b", VT.UINT16: "<H", VT.INT16: "<h", VT.UINT32: "<I",
                   VT.INT32: "<i", VT.FLOAT32: "<f", VT.BOOL: "<?", VT.UINT64: "<Q", VT.INT64: "<q",
                   VT.FLOAT64: "<d"}


@dataclass
class Field:
    name: str
    offset: int
    size: int


@dataclass
class GGUFBytes:
    """GGUF bytes written field by field, remembering where each field lies (to cut and corrupt them)."""

    data: bytearray = field(default_factory=bytearray)
    fields: list[Field] = field(default_factory=list)

    def put(self, name: str, raw: bytes) -> None:
        self.fields.append(Field(name, len(self.data), len(raw)))
        self.data += raw

    def u32(self, name: str, value: int) -> None:
        self.put(name, struct.pack("<I", value))

    def u64(self, name: str, value: int) -> None:
        self.put(name, struct.pack("<Q", value % 2**64))  # negative values wrap, as int64 dims would

    def string(self, name: str, value: str | bytes, length: int | None = None) -> None:
        raw = value.encode() if isinstance(value, str) else value
        self.u64(f"{name}.len", len(raw) if length is None else length)
        self.put(name, raw)

    def value(self, name: str, vtype: int, value) -> None:
        if vtype == VT.STRING:
            self.string(name, value)
        elif vtype == VT.ARRAY:  # value: (element type, items)
            elem_type, items = value
            self.u32(f"{name}.elem_type", elem_type)
            self.u64(f"{name}.count", len(items))
            for i, item in enumerate(items):
                self.value(f"{name}[{i}]", elem_type, item)
        elif vtype in _SCALAR_FORMATS:
            self.put(name, struct.pack(_SCALAR_FORMATS[vtype], value))
        else:  # an invalid type: the caller gives the raw bytes
            self.put(name, value)


@dataclass
class Tensor:
    name: str
    ne: list[int]  # ggml order, innermost first
    ggml_type: int
    offset: int  # relative to the data section


def make_gguf(kvs=(), tensors=(), *, version=3, n_kv=None, n_tensors=None, data_size=None,
              alignment=32, magic=b"GGUF") -> GGUFBytes:
    """kvs: (key, value type, value); tensors: Tensor; the data section is `data_size` bytes (default: just
    enough for the tensors' declared offsets plus 64 bytes each) of a repeating pattern."""
    b = GGUFBytes()
    b.put("magic", magic)
    b.u32("version", version)
    b.u64("n_tensors", len(tensors) if n_tensors is None else n_tensors)
    b.u64("n_kv", len(kvs) if n_kv is None else n_kv)
    for i, (key, vtype, value) in enumerate(kvs):
        b.string(f"kv[{i}].key", key)
        b.u32(f"kv[{i}].type", vtype)
        b.value(f"kv[{i}].value", vtype, value)
    for i, t in enumerate(tensors):
        b.string(f"tensor[{i}].name", t.name)
        b.u32(f"tensor[{i}].n_dims", len(t.ne))
        for j, d in enumerate(t.ne):
            b.u64(f"tensor[{i}].ne[{j}]", d)
        b.u32(f"tensor[{i}].type", t.ggml_type)
        b.u64(f"tensor[{i}].offset", t.offset)
    b.put("padding", bytes(-len(b.data) % alignment))
    if data_size is None:
        data_size = max((t.offset + 64 for t in tensors), default=0)
    b.put("data", bytes(itertools.islice(itertools.cycle(range(1, 256)), data_size)))
    return b


VALID_KVS = [
    ("general.architecture", VT.STRING, "llama"),
    ("general.alignment", VT.UINT32, 32),
    ("llama.block_count", VT.UINT32, 2),
    ("llama.rope.freq_base", VT.FLOAT32, 10000.0),
    ("tokenizer.ggml.add_bos_token", VT.BOOL, True),
    ("tokenizer.ggml.tokens", VT.ARRAY, (VT.STRING, ["<s>", "", "héllo", "☃", "a b"])),
    ("tokenizer.ggml.scores", VT.ARRAY, (VT.FLOAT32, [0.0, -1.0, -2.5, 3.0, 1.0])),
    ("tokenizer.ggml.token_type", VT.ARRAY, (VT.INT32, [3, 1, 1, 1, 1])),
    ("test.nested", VT.ARRAY, (VT.ARRAY, [(VT.UINT8, [1, 2]), (VT.STRING, ["x"])])),
    ("test.i64", VT.INT64, -5),
]
VALID_TENSORS = [
    Tensor("token_embd.weight", [64, 2], QT.Q8_0, 0),  # 2 rows x 68 bytes = 136
    Tensor("output_norm.weight", [8], QT.F32, 160),  # 32 bytes
    Tensor("blk.0.attn_q.weight", [256, 1], QT.Q4_K, 192),  # 144 bytes
]


def valid_file() -> GGUFBytes:
    return make_gguf(VALID_KVS, VALID_TENSORS, data_size=192 + 144)


@pytest.fixture(scope="module")
def parse(tmp_path_factory):
    """Parse bytes from a fresh file each time (a mapped file must never be rewritten under its mapping)."""
    directory = tmp_path_factory.mktemp("fuzz")
    counter = itertools.count()

    def _parse(data: bytes) -> GGUFFile | None:
        path = directory / f"case{next(counter)}.gguf"
        path.write_bytes(bytes(data))
        try:
            g = GGUFFile(path)
            try:  # a file that parses must hand out every tensor and value without error
                for name in g.tensors:
                    g.tensor_data(name).tobytes()
                repr(g.metadata)
            finally:
                g.close()
            return g
        finally:
            path.unlink()

    return _parse


def test_valid_file_parses(parse):
    g = parse(valid_file().data)
    assert g.metadata["tokenizer.ggml.tokens"] == ["<s>", "", "héllo", "☃", "a b"]
    assert g.metadata["test.nested"][1] == ["x"] and g.metadata["test.nested"][0].tolist() == [1, 2]
    assert [t.shape for t in g.tensors.values()] == [(2, 64), (8,), (1, 256)]
    assert g.tensors["blk.0.attn_q.weight"].offset == g.data_offset + 192


def _kvs_with(*extra):
    return [VALID_KVS[0], *extra]


def _tensors_with(*ts, data_size=1024):
    return {"kvs": VALID_KVS[:1], "tensors": list(ts), "data_size": data_size}


def _nested_arrays(depth: int):
    """An array value nested `depth` arrays deep, the innermost empty."""
    value = (VT.UINT8, [])
    for _ in range(depth - 1):
        value = (VT.ARRAY, [value])
    return value


HUGE = 2**64 - 1
BAD_FILES = {  # case -> (make_gguf arguments, message pattern)
    "bad magic": (dict(magic=b"GGML"), "not a GGUF file.*offset 0"),
    "version 0": (dict(version=0), "unsupported GGUF version 0"),
    "version 4": (dict(version=4), "unsupported GGUF version 4"),
    "version 1": (dict(version=1), "version 1 is not supported"),
    "big-endian": (dict(version=0x03000000), "big-endian"),
    "kv count beyond file": (dict(kvs=VALID_KVS, n_kv=HUGE), "metadata key count .* cannot fit"),
    "tensor count beyond file": (dict(n_tensors=2**40), "tensor count .* cannot fit"),
    "kv missing": (dict(kvs=VALID_KVS[:2], n_kv=3, alignment=1), "truncated file: length of key of metadata entry 2"),
    "tensor info missing": (dict(kvs=VALID_KVS[:1], tensors=VALID_TENSORS[:1], n_tensors=2, data_size=0,
                                 alignment=1),
                            "truncated file: length of name of tensor 1"),
    "unknown value type": (dict(kvs=_kvs_with(("x", 13, b"\0" * 8))), "key 'x' at offset .*unknown value type 13"),
    "unknown array element type": (dict(kvs=_kvs_with(("x", VT.ARRAY, (77, [])))),
                                   "key 'x'.*unknown array element type 77"),
    "array count beyond file": (dict(kvs=_kvs_with(("x", VT.ARRAY, (VT.UINT32, [1])))),
                                "key 'x' at offset \\d+: array length 2305843009213693952 of uint32 cannot fit",
                                {"kv[1].value.count": 2**61}),
    "string length beyond file": (dict(kvs=_kvs_with(("s", VT.STRING, "abc"))),
                                  "string value of key 's' at offset \\d+: length 9223372036854775808 is larger",
                                  {"kv[1].value.len": 2**63}),
    "string array element beyond file": (dict(kvs=_kvs_with(("t", VT.ARRAY, (VT.STRING, ["a", "b", "c"])))),
                                         "string 1 of key 't' at offset \\d+: length 1000000 is larger",
                                         {"kv[1].value[1].len": 10**6}),
    "duplicate key": (dict(kvs=_kvs_with(("a", VT.UINT8, 1), ("a", VT.UINT8, 2))), "duplicate metadata key 'a'"),
    "invalid utf-8 key": (dict(kvs=_kvs_with((b"\xff\xfe", VT.UINT8, 1))), "invalid UTF-8"),
    "invalid utf-8 in string array": (dict(kvs=_kvs_with(("t", VT.ARRAY, (VT.STRING, ["ok", b"\xc3("])))),
                                      "string 1 of key 't' at offset \\d+: invalid UTF-8"),
    "alignment not a power of two": (dict(kvs=_kvs_with(("general.alignment", VT.UINT32, 48))),
                                     "general.alignment.* 48, not a nonzero power of two"),
    "alignment zero": (dict(kvs=_kvs_with(("general.alignment", VT.UINT32, 0))), "not a nonzero power of two"),
    "alignment of wrong type": (dict(kvs=_kvs_with(("general.alignment", VT.UINT64, 32))), "expected uint32"),
    "nesting too deep": (dict(kvs=_kvs_with(("n", VT.ARRAY, _nested_arrays(9)))), "nested deeper than 8"),
    "nesting at the limit": (dict(kvs=_kvs_with(("n", VT.ARRAY, _nested_arrays(8))), n_kv=3, alignment=1),
                             "truncated file: length of key of metadata entry 2"),
    "unknown tensor type": (_tensors_with(Tensor("t", [32], 99, 0)), "tensor 't'.*unknown tensor type id 99"),
    "removed tensor type": (_tensors_with(Tensor("t", [32], 4, 0)), "unknown tensor type id 4"),
    "n_dims zero": (_tensors_with(Tensor("t", [], QT.F32, 0)), "n_dims 0 out of range 1..4"),
    "n_dims five": (_tensors_with(Tensor("t", [1, 1, 1, 1, 1], QT.F32, 0)), "n_dims 5 out of range"),
    "zero dim": (_tensors_with(Tensor("t", [4, 0], QT.F32, 0)), r"dims \[4, 0\] must all be positive"),
    "negative dim": (_tensors_with(Tensor("t", [4, -3], QT.F32, 0)), r"dims \[4, -3\] must all be positive"),
    "overflowing dims": (_tensors_with(Tensor("t", [2**62, 2**62], QT.F32, 0)), "overflow int64"),
    "row not a multiple of the block": (_tensors_with(Tensor("t", [48, 2], QT.Q8_0, 0)),
                                        "innermost dim 48 is not a multiple of the Q8_0 block size 32"),
    "data beyond end of file": (_tensors_with(Tensor("t", [1024], QT.F32, 0), data_size=4095),
                                "tensor 't'.*beyond the end of the file"),
    "offset beyond end of file": (_tensors_with(Tensor("t", [8], QT.F32, 2**60)), "beyond the end"),
    "misaligned data": (_tensors_with(Tensor("t", [8], QT.F32, 4)), "data offset 4 is not a multiple of the alignment 32"),
    "overlapping tensors": (_tensors_with(Tensor("a", [64], QT.F32, 0), Tensor("b", [8], QT.F32, 128)),
                            "tensor 'b' data at offset \\d+ overlaps tensor 'a'"),
    "duplicate tensor": (_tensors_with(Tensor("a", [8], QT.F32, 0), Tensor("a", [8], QT.F32, 32)),
                         "duplicate tensor name 'a'"),
    "tensor name too long": (_tensors_with(Tensor("x" * 64, [8], QT.F32, 0)), "name longer than 63 bytes"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_each_validation_error_names_what_and_where(case, parse):
    args, message, *patches = BAD_FILES[case]
    b = make_gguf(**args)
    for name, value in (patches[0] if patches else {}).items():
        f = next(f for f in b.fields if f.name == name)
        b.data[f.offset:f.offset + 8] = struct.pack("<Q", value)
    with pytest.raises(GGUFError, match=message):
        parse(b.data)


def test_tiny_files(parse):
    for data in (b"G", b"GGUF", b"GGUF\x03\x00\x00\x00", b"GGUF\x03\x00\x00\x00" + bytes(15)):
        with pytest.raises(GGUFError, match="truncated file"):
            parse(data)


def test_every_truncation_fails_cleanly(parse):
    """Cut the valid file at every byte: each cut fails, and cuts at field boundaries say why."""
    b = valid_file()
    boundaries = {f.offset for f in b.fields}
    for n in range(len(b.data)):
        with pytest.raises(GGUFError) as e:
            parse(b.data[:n])
        if n in boundaries:
            assert re.search("truncated|larger than|beyond the end|cannot fit|empty file", str(e.value)), (n, str(e.value))


FUZZ = settings(max_examples=300, deadline=timedelta(milliseconds=500),
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8))
def test_random_byte_flips(flips, parse):
    data = valid_file().data
    for position, value in flips:
        data[position % len(data)] = value
    _parse_or_gguf_error(parse, data)


def _numeric_fields(b: GGUFBytes) -> list[Field]:
    return [f for f in b.fields if f.size in (4, 8) and f.name != "magic"]


HOSTILE_VALUES = st.one_of(st.sampled_from([0, 1, 2**31, 2**32 - 1, 2**63 - 1, 2**63, 2**64 - 1]),
                           st.integers(0, 2**64 - 1), st.integers(0, 4096))


@FUZZ
@given(picks=st.lists(st.tuples(st.integers(0, 10**4), HOSTILE_VALUES), min_size=1, max_size=3))
def test_hostile_lengths_counts_and_offsets(picks, parse):
    """Overwrite lengths, counts, types, dims and offsets; parsing never allocates much beyond the file size."""
    b = valid_file()
    fields = _numeric_fields(b)
    for index, value in picks:
        f = fields[index % len(fields)]
        b.data[f.offset:f.offset + f.size] = (value % 2 ** (8 * f.size)).to_bytes(f.size, "little")
    tracemalloc.start()
    try:
        _parse_or_gguf_error(parse, b.data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, peak


@FUZZ
@given(offsets=st.lists(st.integers(0, 2**64 - 1) | st.integers(0, 512), min_size=3, max_size=3))
def test_bad_tensor_offsets(offsets, parse):
    b = valid_file()
    for i, value in enumerate(offsets):
        f = next(f for f in b.fields if f.name == f"tensor[{i}].offset")
        b.data[f.offset:f.offset + 8] = value.to_bytes(8, "little")
    g = _parse_or_gguf_error(parse, b.data)
    if g is not None:  # accepted: every tensor lies inside the file, aligned, without overlap
        spans = sorted((t.offset, t.offset + t.n_bytes) for t in g.tensors.values())
        assert all(end <= g.file_size for _, end in spans)
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
        assert all((start - g.data_offset) % 32 == 0 for start, _ in spans)


@FUZZ
@given(data=st.binary(max_size=256))
def test_arbitrary_bytes_after_a_valid_header(data, parse):
    _parse_or_gguf_error(parse, b"GGUF\x03\x00\x00\x00" + data)


def _parse_or_gguf_error(parse, data) -> GGUFFile | None:
    try:
        return parse(data)
    except GGUFError:
        return None
