"""GGUFFile: round trips through gguf-py's GGUFWriter, and agreement with gguf-py's GGUFReader on real models."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as QT, GGUFReader, GGUFValueType as VT, GGUFWriter

from gguf_runtime.gguf_file import GGUFError, GGUFFile

SCALARS = {  # key -> (type, value); values at the edges of each type's range
    "t.u8": (VT.UINT8, 255),
    "t.i8": (VT.INT8, -128),
    "t.u16": (VT.UINT16, 65535),
    "t.i16": (VT.INT16, -32768),
    "t.u32": (VT.UINT32, 2**32 - 1),
    "t.i32": (VT.INT32, -(2**31)),
    "t.f32": (VT.FLOAT32, 1.5),
    "t.u64": (VT.UINT64, 2**64 - 1),
    "t.i64": (VT.INT64, -(2**63)),
    "t.f64": (VT.FLOAT64, math.pi),
    "t.bool_true": (VT.BOOL, True),
    "t.bool_false": (VT.BOOL, False),
    "t.str": (VT.STRING, "héllo ☃ 𝄞"),
    "t.str_empty": (VT.STRING, ""),
}
NUMERIC_ARRAYS = {  # key -> (element type, numpy dtype, values)
    "a.u8": (VT.UINT8, np.uint8, [0, 1, 255]),
    "a.i8": (VT.INT8, np.int8, [-128, 0, 127]),
    "a.u16": (VT.UINT16, np.uint16, [0, 65535]),
    "a.i16": (VT.INT16, np.int16, [-32768, 32767]),
    "a.u32": (VT.UINT32, np.uint32, [0, 2**32 - 1, 7]),
    "a.i32": (VT.INT32, np.int32, [-(2**31), 2**31 - 1]),
    "a.f32": (VT.FLOAT32, np.float32, [0.0, -1.25, 3.0e38]),
    "a.u64": (VT.UINT64, np.uint64, [0, 2**64 - 1]),
    "a.i64": (VT.INT64, np.int64, [-(2**63), 2**63 - 1]),
    "a.f64": (VT.FLOAT64, np.float64, [math.e, -0.0, 1e300]),
    "a.bool": (VT.BOOL, np.bool_, [True, False, True]),
}
RNG = np.random.default_rng(0)
STRING_ARRAYS = {
    "s.words": ["alpha", "", "βeta", "☃", "tab\there", "new\nline"],
    "s.with_nul": ["a\x00b", "", "c"],  # a NUL inside a string takes the one-by-one decode path
    "s.big": ["".join(chr(c) for c in RNG.integers(1, 0x2FF, size=RNG.integers(0, 12))) for _ in range(3000)],
}
NESTED_ARRAYS = {
    "n.ints": [[1, 2, 3], [4], [5, 6]],
    "n.strings": [["a", "bc"], [""], ["☃", "d", "e"]],
    "n.deep": [[[1, 2], [3]], [[4]]],
}


def _quantized_rows(ggml_type: QT, shape: tuple[int, ...]) -> np.ndarray:
    """Random raw bytes for a block-quantized tensor of element shape `shape`, as uint8 (rows, row bytes)."""
    block_size, type_size = GGML_QUANT_SIZES[ggml_type]
    return RNG.integers(0, 256, size=(*shape[:-1], shape[-1] // block_size * type_size), dtype=np.uint8)


TENSORS = {  # name -> (ggml type, element shape, array as written)
    "f32.matrix": (QT.F32, (3, 4), RNG.standard_normal((3, 4)).astype(np.float32)),
    "f32.vector": (QT.F32, (5,), RNG.standard_normal(5).astype(np.float32)),
    "f16.matrix": (QT.F16, (2, 8), RNG.standard_normal((2, 8)).astype(np.float16)),
    "bf16.cube": (QT.BF16, (2, 3, 4), RNG.integers(0, 2**16, size=(2, 3, 4), dtype=np.uint16)),
    "q8_0.matrix": (QT.Q8_0, (3, 64), _quantized_rows(QT.Q8_0, (3, 64))),
    "q4_0.matrix": (QT.Q4_0, (2, 32), _quantized_rows(QT.Q4_0, (2, 32))),
    "q4_1.matrix": (QT.Q4_1, (1, 96), _quantized_rows(QT.Q4_1, (1, 96))),
    "q5_0.matrix": (QT.Q5_0, (2, 32), _quantized_rows(QT.Q5_0, (2, 32))),
    "q4_k.matrix": (QT.Q4_K, (2, 256), _quantized_rows(QT.Q4_K, (2, 256))),
    "q6_k.4d": (QT.Q6_K, (2, 1, 3, 512), _quantized_rows(QT.Q6_K, (2, 1, 3, 512))),
}


def write_sample(path, alignment: int | None) -> None:
    w = GGUFWriter(path, arch="testarch")
    if alignment is not None:
        w.add_custom_alignment(alignment)
    for key, (vtype, value) in SCALARS.items():
        w.add_key_value(key, value, vtype)
    for key, (vtype, _, values) in NUMERIC_ARRAYS.items():
        w.add_key_value(key, values, VT.ARRAY, sub_type=vtype)
    for key, values in STRING_ARRAYS.items():
        w.add_key_value(key, values, VT.ARRAY, sub_type=VT.STRING)
    for key, values in NESTED_ARRAYS.items():
        w.add_key_value(key, values, VT.ARRAY)
    for name, (ggml_type, _, array) in TENSORS.items():
        raw_dtype = None if ggml_type in (QT.F32, QT.F16) else ggml_type
        w.add_tensor(name, array, raw_dtype=raw_dtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _as_lists(value):
    """Nested arrays as plain lists, to compare with what was written."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list):
        return [_as_lists(v) for v in value]
    return value


@pytest.fixture(scope="module", params=[None, 1, 8, 64, 4096], ids=lambda a: f"align{a}")
def sample(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "sample.gguf"
    write_sample(path, request.param)
    with GGUFFile(path) as g:
        yield g, request.param or 32


def test_header(sample):
    g, alignment = sample
    assert g.version == 3
    assert g.alignment == alignment
    assert g.data_offset % alignment == 0
    assert g.architecture == "testarch"
    assert g.get("missing.key", 42) == 42


def test_scalars_round_trip(sample):
    g, _ = sample
    for key, (vtype, value) in SCALARS.items():
        assert g.metadata_types[key] == vtype, key
        got = g.metadata[key]
        assert got == value and type(got) is type(value), key
        assert key not in g.metadata_array_types


def test_numeric_arrays_round_trip_as_readonly_views(sample):
    g, _ = sample
    for key, (vtype, dtype, values) in NUMERIC_ARRAYS.items():
        got = g.metadata[key]
        assert g.metadata_types[key] == VT.ARRAY
        assert g.metadata_array_types[key] == vtype
        assert isinstance(got, np.ndarray) and got.dtype == dtype, key
        np.testing.assert_array_equal(got, np.array(values, dtype=dtype))
        assert not got.flags.writeable and not got.flags.owndata, key


def test_string_and_nested_arrays_round_trip(sample):
    g, _ = sample
    for key, values in STRING_ARRAYS.items():
        assert g.metadata[key] == values, key
        assert g.metadata_array_types[key] == VT.STRING
    for key, values in NESTED_ARRAYS.items():
        assert _as_lists(g.metadata[key]) == values, key
        assert g.metadata_array_types[key] == VT.ARRAY


def test_metadata_keeps_file_order(sample):
    g, alignment = sample
    expected = ["general.architecture"] + (["general.alignment"] if alignment != 32 else [])
    expected += [*SCALARS, *NUMERIC_ARRAYS, *STRING_ARRAYS, *NESTED_ARRAYS]
    assert list(g.metadata) == expected == list(g.metadata_types)


def test_tensors_round_trip(sample):
    g, alignment = sample
    assert list(g.tensors) == list(TENSORS)
    for name, (ggml_type, shape, array) in TENSORS.items():
        info = g.tensors[name]
        assert (info.name, info.ggml_type, info.shape) == (name, ggml_type, shape)
        assert info.type_name == ggml_type.name
        assert info.n_elements == math.prod(shape)
        assert info.n_bytes == array.nbytes
        assert (info.offset - g.data_offset) % alignment == 0
        data = g.tensor_data(name)
        assert data.dtype == array.dtype and data.shape == array.shape, name
        np.testing.assert_array_equal(data, array)
        assert not data.flags.writeable and not data.flags.owndata, name


def test_agrees_with_gguf_py_on_sample(sample):
    g, _ = sample
    _assert_same_as_gguf_py(g, GGUFReader(g.path))


def test_big_endian_file_is_refused(tmp_path):
    from gguf import GGUFEndian
    path = tmp_path / "be.gguf"
    w = GGUFWriter(path, arch="x", endianess=GGUFEndian.BIG)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(GGUFError, match="big-endian"):
        GGUFFile(path)


def test_tensor_data_after_close_raises(tmp_path):
    path = tmp_path / "s.gguf"
    write_sample(path, None)
    g = GGUFFile(path)
    view = g.tensor_data("f32.vector")
    g.close()  # a live view keeps the mapping; closing must not fail
    np.testing.assert_array_equal(view, TENSORS["f32.vector"][2])
    with pytest.raises(ValueError, match="closed"):
        g.tensor_data("f32.vector")


def test_missing_architecture_is_a_gguf_error(tmp_path):
    path = tmp_path / "noarch.gguf"
    path.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + bytes(16))
    g = GGUFFile(path)
    assert g.metadata == {} and g.tensors == {}
    with pytest.raises(GGUFError, match="general.architecture"):
        g.architecture


def test_filesystem_errors_stay_oserrors(tmp_path):
    with pytest.raises(FileNotFoundError):
        GGUFFile(tmp_path / "nope.gguf")
    with pytest.raises(IsADirectoryError):
        GGUFFile(tmp_path)
    (tmp_path / "empty.gguf").write_bytes(b"")
    with pytest.raises(GGUFError, match="empty file"):
        GGUFFile(tmp_path / "empty.gguf")


# -- real models ------------------------------------------------------------------------------------


def _assert_same_as_gguf_py(g: GGUFFile, reader: GGUFReader) -> None:
    """Every key, type and value, and every tensor's name/type/shape/offset/size/bytes, as gguf-py reads them."""
    fields = {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert list(g.metadata) == list(fields)
    for key, field in fields.items():
        assert g.metadata_types[key] == field.types[0], key
        ours, theirs = g.metadata[key], field.contents()
        if field.types[0] == VT.ARRAY:
            assert g.metadata_array_types[key] == field.types[1], key
            if field.types[-1] != VT.STRING and field.types[1] != VT.ARRAY:
                ours = ours.tolist()
            elif field.types[1] == VT.ARRAY:  # gguf-py flattens nested arrays
                ours = _flatten(ours)
        assert ours == theirs, key
    assert g.data_offset == reader.data_offset and g.alignment == reader.alignment
    assert list(g.tensors) == [t.name for t in reader.tensors]
    for t in reader.tensors:
        info = g.tensors[t.name]
        assert info.ggml_type == t.tensor_type, t.name
        assert info.shape == tuple(reversed(t.shape.tolist())), t.name
        assert (info.offset, info.n_bytes) == (t.data_offset, t.n_bytes), t.name
        assert np.array_equal(g.tensor_data(t.name).reshape(-1).view(np.uint8), t.data.reshape(-1).view(np.uint8))


def _flatten(value) -> list:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list) and value and isinstance(value[0], (list, np.ndarray)):
        return [x for v in value for x in _flatten(v)]
    return list(value)


def _assert_packed_like_llama_cpp(g: GGUFFile) -> None:
    """llama.cpp requires each tensor at exactly the previous one's padded end, and so do converters."""
    expected = g.data_offset
    for info in g.tensors.values():
        assert info.offset == expected, info.name
        expected += -(-info.n_bytes // g.alignment) * g.alignment
    last = list(g.tensors.values())[-1]
    assert last.offset + last.n_bytes <= g.file_size <= expected


# gguf-py's reader takes ~5 s on SmolLM2 and ~15-30 s on Gemma (262k-token vocab); the full compare runs on
# those two, and the Qwen files get the structural checks below (gguf-py needs 20-60 s for each of them).
@pytest.mark.parametrize("fixture", ["smollm2_path", "gemma_path"])
def test_real_model_matches_gguf_py(fixture, request):
    path = request.getfixturevalue(fixture)
    with GGUFFile(path) as g:
        _assert_same_as_gguf_py(g, GGUFReader(path))
        _assert_packed_like_llama_cpp(g)


@pytest.mark.parametrize("fixture,arch,n_layers,n_vocab,types", [
    ("smollm2_path", "llama", 30, 49152, {"F32", "Q8_0", "Q4_1"}),
    ("qwen05_path", "qwen2", 24, 151936, {"F32", "Q5_0", "Q8_0", "Q4_K", "Q6_K"}),
    ("qwen15_path", "qwen2", 28, 151936, {"F32", "Q4_K", "Q6_K"}),
    ("gemma_path", "gemma3", 18, 262144, {"F32", "Q8_0", "Q4_K", "Q6_K", "Q5_0"}),
])
def test_real_model_structure(fixture, arch, n_layers, n_vocab, types, request):
    with GGUFFile(request.getfixturevalue(fixture)) as g:
        assert g.version == 3 and g.architecture == arch
        assert g.metadata[f"{arch}.block_count"] == n_layers
        tokens = g.metadata["tokenizer.ggml.tokens"]
        assert len(tokens) == n_vocab == len(g.metadata["tokenizer.ggml.token_type"])
        assert all(isinstance(t, str) for t in tokens)
        assert {t.type_name for t in g.tensors.values()} == types
        n_embd = g.metadata[f"{arch}.embedding_length"]
        embd = g.tensors["token_embd.weight"]
        assert embd.shape == (n_vocab, n_embd)
        if embd.type_name != "F32":
            block_size, type_size = GGML_QUANT_SIZES[QT(embd.ggml_type)]
            assert g.tensor_data("token_embd.weight").shape == (n_vocab, n_embd // block_size * type_size)
        merges = g.get("tokenizer.ggml.merges")
        if merges is not None:
            assert all(len(m.split(" ")) == 2 for m in merges[:1000])
        _assert_packed_like_llama_cpp(g)


def test_our_copy_of_gguf_pys_constants_is_gguf_pys():
    """ggml_constants.py runs gguf-py's constants module from its file (its package __init__ costs ~45 ms of a
    start): the same tables, and enums that compare equal to gguf-py's."""
    from gguf_runtime import ggml_constants as C

    assert {int(t): s for t, s in C.GGML_QUANT_SIZES.items()} == {int(t): s for t, s in GGML_QUANT_SIZES.items()}
    assert [(m.name, int(m)) for m in C.GGMLQuantizationType] == [(m.name, int(m)) for m in QT]
    assert [(m.name, int(m)) for m in C.GGUFValueType] == [(m.name, int(m)) for m in VT]
    assert C.GGUFValueType.ARRAY == VT.ARRAY and {VT.STRING: 1}[C.GGUFValueType.STRING] == 1
    assert pickle.loads(pickle.dumps(C.GGMLQuantizationType.Q4_1)) is C.GGMLQuantizationType.Q4_1  # numba's keys
