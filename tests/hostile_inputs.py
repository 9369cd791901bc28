"""Hostile model files, chat templates and KV-state files, generated deterministically from (category, seed).

A GGUF file is read into a `GGUFModel` (metadata entries with their GGUF types, tensors with their raw bytes),
mutated structurally (a key's type, a tensor's shape, the vocabulary's arrays, non-finite floats, the chat
template) and written back by `GGUFModel.to_bytes`; byte-level categories (truncation, bit flips, huge
counts) corrupt the written bytes at the offsets `header_fields` finds. Each generator returns a `Case`: the
bytes to write (or a special path), and whether a correct loader must refuse it (`must_reject`) or may
either refuse it cleanly or run it.
"""

from __future__ import annotations

import json
import random
import struct
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType as QT, GGUFValueType as VT

from gguf_runtime.gguf_file import GGUFFile

_SCALAR = {VT.UINT8: "<B", VT.INT8: "<b", VT.UINT16: "<H", VT.INT16: "<h", VT.UINT32: "<I", VT.INT32: "<i",
           VT.FLOAT32: "<f", VT.BOOL: "<?", VT.UINT64: "<Q", VT.INT64: "<q", VT.FLOAT64: "<d"}


@dataclass
class Entry:
    key: str
    vtype: int  # GGUFValueType
    value: Any  # scalar, str, or for arrays: list/np.ndarray
    elem_type: int | None = None  # arrays only


@dataclass
class Tensor:
    name: str
    ggml_type: int
    ne: list[int]  # ggml order, innermost first
    data: bytes


@dataclass
class GGUFModel:
    entries: list[Entry]
    tensors: list[Tensor]

    @classmethod
    def read(cls, path) -> GGUFModel:
        with GGUFFile(path) as g:
            entries = []
            for key, value in g.metadata.items():
                vtype = g.metadata_types[key]
                elem = g.metadata_array_types.get(key)
                if isinstance(value, np.ndarray):
                    value = value.copy()
                entries.append(Entry(key, vtype, value, elem))
            tensors = [Tensor(t.name, t.ggml_type, list(reversed(t.shape)),
                              bytes(g._mm[t.offset:t.offset + t.n_bytes])) for t in g.tensors.values()]
        return cls(entries, tensors)

    def copy(self) -> GGUFModel:
        return GGUFModel([replace(e) for e in self.entries], [replace(t, ne=list(t.ne)) for t in self.tensors])

    # -- access --------------------------------------------------------------------------------------------
    def get(self, key: str) -> Entry | None:
        return next((e for e in self.entries if e.key == key), None)

    def set(self, key: str, vtype: int, value: Any, elem_type: int | None = None) -> None:
        entry = self.get(key)
        if entry is None:
            self.entries.append(Entry(key, vtype, value, elem_type))
        else:
            entry.vtype, entry.value, entry.elem_type = vtype, value, elem_type

    def delete(self, key: str) -> None:
        self.entries = [e for e in self.entries if e.key != key]

    def tensor(self, name: str) -> Tensor | None:
        return next((t for t in self.tensors if t.name == name), None)

    @property
    def arch(self) -> str:
        return self.get("general.architecture").value

    # -- writing -------------------------------------------------------------------------------------------
    def to_bytes(self, alignment: int = 32) -> bytes:
        out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(self.tensors), len(self.entries)))
        for e in self.entries:
            _put_string(out, e.key)
            out += struct.pack("<I", e.vtype)
            _put_value(out, e.vtype, e.value, e.elem_type)
        offset = 0
        placed = []
        for t in self.tensors:
            _put_string(out, t.name)
            out += struct.pack("<I", len(t.ne)) + struct.pack(f"<{len(t.ne)}q", *t.ne)
            out += struct.pack("<IQ", t.ggml_type, offset)
            placed.append(offset)
            offset += -(-len(t.data) // alignment) * alignment
        out += b"\0" * (-len(out) % alignment)
        for t, at in zip(self.tensors, placed):
            out += t.data + b"\0" * (-len(t.data) % alignment)
        return bytes(out)


def _put_string(out: bytearray, s: str | bytes) -> None:
    raw = s.encode() if isinstance(s, str) else s
    out += struct.pack("<Q", len(raw)) + raw


def _put_value(out: bytearray, vtype: int, value: Any, elem_type: int | None) -> None:
    if vtype == VT.STRING:
        _put_string(out, value)
    elif vtype == VT.ARRAY:
        out += struct.pack("<IQ", elem_type, len(value))
        if elem_type in _SCALAR and isinstance(value, np.ndarray):
            out += value.astype(np.dtype(_SCALAR[elem_type].replace("?", "u1"))).tobytes()
        else:
            for item in value:
                _put_value(out, elem_type, item, None)
    else:
        out += struct.pack(_SCALAR[vtype], value)


# ---- header field offsets (for byte-level corruption) ---------------------------------------------------------

@dataclass
class HeaderField:
    kind: str  # "count", "length", "type", "dim", "offset"
    offset: int
    size: int


def header_fields(data: bytes) -> list[HeaderField]:
    """Where the counts, lengths, types, dims and data offsets of a valid GGUF header lie."""
    fields = [HeaderField("count", 8, 8), HeaderField("count", 16, 8)]
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
    pos = 24

    def string() -> None:
        nonlocal pos
        fields.append(HeaderField("length", pos, 8))
        (n,) = struct.unpack_from("<Q", data, pos)
        pos += 8 + n

    def value(vtype: int) -> None:
        nonlocal pos
        if vtype == VT.STRING:
            string()
        elif vtype == VT.ARRAY:
            fields.append(HeaderField("type", pos, 4))
            fields.append(HeaderField("length", pos + 4, 8))
            elem, count = struct.unpack_from("<IQ", data, pos)
            pos += 12
            if elem in _SCALAR:
                pos += count * struct.calcsize(_SCALAR[elem])
            else:
                for _ in range(count):
                    value(elem)
        else:
            pos += struct.calcsize(_SCALAR[vtype])

    for _ in range(n_kv):
        string()
        fields.append(HeaderField("type", pos, 4))
        (vtype,) = struct.unpack_from("<I", data, pos)
        pos += 4
        value(vtype)
    for _ in range(n_tensors):
        string()
        (n_dims,) = struct.unpack_from("<I", data, pos)
        fields.append(HeaderField("count", pos, 4))
        pos += 4
        for d in range(n_dims):
            fields.append(HeaderField("dim", pos + 8 * d, 8))
        pos += 8 * n_dims
        fields.append(HeaderField("type", pos, 4))
        fields.append(HeaderField("offset", pos + 4, 8))
        pos += 12
    return fields


# ---- cases --------------------------------------------------------------------------------------------------

@dataclass
class Case:
    category: str
    description: str
    data: bytes | None = None  # the file's bytes; None for a special path
    special_path: str | None = None  # "fifo", "directory", "device", "fifo-symlink"
    must_reject: bool = False
    template_only: bool = False  # only the chat template differs from the base model

    def __repr__(self) -> str:
        return f"Case({self.category}: {self.description})"


HUGE = [2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**40, 2**62, 2**63 - 1, 2**64 - 1]
KNOWN_NUMERIC_KEYS = ["block_count", "embedding_length", "feed_forward_length", "attention.head_count",
                      "attention.head_count_kv", "attention.key_length", "attention.value_length",
                      "rope.dimension_count", "context_length", "vocab_size", "rope.freq_base",
                      "attention.layer_norm_rms_epsilon", "rope.scaling.factor", "rope.freq_scale"]
KNOWN_GENERAL_KEYS = ["general.architecture", "general.name", "general.alignment", "tokenizer.ggml.model",
                      "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.scores",
                      "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id",
                      "tokenizer.ggml.eos_token_id", "tokenizer.ggml.padding_token_id",
                      "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.eot_token_id",
                      "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token",
                      "tokenizer.ggml.add_space_prefix", "tokenizer.chat_template", "rope.scaling.type"]


def _wrong_value(rng: random.Random, current: Entry | None) -> tuple[int, Any, int | None]:
    """A value of some type other than the key's own."""
    options: list[tuple[int, Any, int | None]] = [
        (VT.STRING, "abc", None), (VT.STRING, "", None), (VT.STRING, "12", None),
        (VT.FLOAT32, float("nan"), None), (VT.FLOAT64, float("inf"), None), (VT.FLOAT32, 1.5, None),
        (VT.INT32, -1, None), (VT.INT64, -(2**63), None), (VT.UINT64, 2**64 - 1, None), (VT.BOOL, True, None),
        (VT.UINT8, 7, None), (VT.ARRAY, np.array([1, 2, 3], np.int32), VT.INT32),
        (VT.ARRAY, ["a", "b"], VT.STRING), (VT.ARRAY, np.array([np.nan, 1.0], np.float32), VT.FLOAT32),
        (VT.ARRAY, np.zeros(0, np.uint8), VT.UINT8), (VT.ARRAY, np.array([1, 0], np.uint8), VT.BOOL),
    ]
    if current is not None:
        options = [o for o in options if o[0] != current.vtype or o[2] != current.elem_type]
    return rng.choice(options)


def mutate_wrong_type(model: GGUFModel, rng: random.Random) -> Case:
    m = model.copy()
    keys = [f"{m.arch}.{k}" for k in KNOWN_NUMERIC_KEYS] + KNOWN_GENERAL_KEYS
    key = rng.choice(keys)
    if key.endswith("rope.scaling.type"):
        key = f"{m.arch}.rope.scaling.type"
    vtype, value, elem = _wrong_value(rng, m.get(key))
    m.set(key, vtype, value, elem)
    # an integer stored as another integer type with an in-range value is legitimately accepted
    return Case("wrong_type", f"{key} := {_short(value)} ({VT(vtype).name})", m.to_bytes())


def mutate_bad_value(model: GGUFModel, rng: random.Random) -> Case:
    """Known numeric keys with hostile values of the right type: zero, negative, huge, non-finite."""
    m = model.copy()
    name = rng.choice(KNOWN_NUMERIC_KEYS)
    key = f"{m.arch}.{name}"
    is_float = name in ("rope.freq_base", "attention.layer_norm_rms_epsilon", "rope.scaling.factor",
                        "rope.freq_scale")
    if is_float:
        value = rng.choice([0.0, -1.0, float("nan"), float("inf"), -float("inf"), 1e38, 1e-45, -0.0])
        m.set(key, VT.FLOAT32, value)
        must = value != value or abs(value) == float("inf") or (value <= 0 and name != "rope.scaling.factor")
    else:
        value = rng.choice([0, 1, 2, 3, 5, 7, 9999, 2**16, 2**20, 2**31 - 1, 2**32 - 1] + HUGE)
        vtype = VT.UINT64 if value >= 2**32 else VT.UINT32
        m.set(key, vtype, value)
        must = value >= 2**32
    return Case("huge_count", f"{key} := {value}", m.to_bytes(), must_reject=must)


def _tensor_bytes(ggml_type: int, ne: list[int], rng: random.Random) -> bytes:
    from gguf.constants import GGML_QUANT_SIZES
    block, type_size = GGML_QUANT_SIZES[QT(ggml_type)]
    n = int(np.prod(ne)) // block * type_size
    if ggml_type == QT.F32:
        return (np.random.default_rng(rng.randrange(2**32)).standard_normal(n // 4) * 0.1 + 1).astype(
            np.float32).tobytes()
    if ggml_type == QT.Q8_0:  # a plausible scale (f16 0.01) and random quants per block
        raw = bytearray(np.random.default_rng(rng.randrange(2**32)).integers(0, 256, n, np.uint8).tobytes())
        scale = np.float16(0.01).tobytes()
        for at in range(0, n, type_size):
            raw[at:at + 2] = scale
        return bytes(raw)
    return bytes(n)


def mutate_shape(model: GGUFModel, rng: random.Random) -> Case:
    """Tensor shapes that contradict the hyperparameters, missing and unexpected tensors."""
    m = model.copy()
    kind = rng.choice(["shrink", "grow", "swap", "one_row", "extra_dim", "unit_dim", "drop", "unknown",
                       "fewer_layers", "more_layers", "ffn_up_small", "norm_2d", "norm_short"])
    t = rng.choice(m.tensors)
    must = True
    if kind == "ffn_up_small":
        t = m.tensor("blk.0.ffn_up.weight")
        t.ne = [t.ne[0], max(1, t.ne[1] // 2)]
    elif kind == "norm_2d":
        t = m.tensor("blk.0.attn_norm.weight")
        t.ne = [t.ne[0], 2]
    elif kind == "norm_short":
        t = m.tensor(rng.choice(["blk.1.ffn_norm.weight", "output_norm.weight"]))
        t.ne = [t.ne[0] // 2]
    elif kind == "shrink" and t.ne[-1] > 1:
        t.ne = t.ne[:-1] + [t.ne[-1] - 1]
    elif kind == "grow":
        t.ne = t.ne[:-1] + [t.ne[-1] + rng.choice([1, 32, 1000])]
    elif kind == "swap" and len(t.ne) == 2 and t.ne[0] != t.ne[1] and t.ne[1] % 32 == 0:
        t.ne = [t.ne[1], t.ne[0]]
    elif kind == "one_row" and len(t.ne) == 2:
        t.ne = [t.ne[0], 1]
    elif kind == "extra_dim":
        t.ne = t.ne + [2]
    elif kind == "unit_dim":  # trailing 1s do not change a ggml shape: must still run
        t.ne = t.ne + [1]
        must = False
    elif kind == "drop":
        m.tensors.remove(t)
    elif kind == "unknown":
        m.tensors.append(Tensor("blk.0.ffn_extra.weight", QT.F32, [64], bytes(256)))
    elif kind in ("fewer_layers", "more_layers"):
        n = m.get(f"{m.arch}.block_count")
        n.value = n.value - 1 if kind == "fewer_layers" else n.value + 1
    else:
        t.ne = [t.ne[0] * 2] + t.ne[1:] if t.ne[0] * 2 % 32 == 0 else t.ne + [3]
    if kind not in ("drop", "unknown", "fewer_layers", "more_layers"):
        t.data = _tensor_bytes(t.ggml_type, t.ne, rng)
    return Case("shape", f"{kind} {t.name} -> {t.ne}", m.to_bytes(), must_reject=must)


def resize_vocab(m: GGUFModel, tokens: list[str], types: list[int] | None, rng: random.Random) -> None:
    """Give the model a new consistent vocabulary: tokens, scores, types and the embedding/output rows."""
    n = len(tokens)
    m.set("tokenizer.ggml.tokens", VT.ARRAY, tokens, VT.STRING)
    m.set("tokenizer.ggml.scores", VT.ARRAY, np.zeros(n, np.float32), VT.FLOAT32)
    m.set("tokenizer.ggml.token_type", VT.ARRAY, np.array(types or [1] * n, np.int32), VT.INT32)
    if m.get(f"{m.arch}.vocab_size") is not None:
        m.set(f"{m.arch}.vocab_size", VT.UINT32, n)
    for name in ("token_embd.weight", "output.weight"):
        t = m.tensor(name)
        if t is not None:
            t.ne = [t.ne[0], n]
            t.data = _tensor_bytes(t.ggml_type, t.ne, rng)


def mutate_vocab(model: GGUFModel, rng: random.Random) -> Case:
    """Vocabularies whose arrays disagree in length, invalid token types, odd special ids."""
    m = model.copy()
    tokens = list(m.get("tokenizer.ggml.tokens").value)
    n = len(tokens)
    kind = rng.choice(["scores_short", "scores_long", "types_short", "types_long", "type_invalid",
                       "tokens_fewer", "tokens_more", "special_out_of_range", "special_negative",
                       "byte_token_text", "many_control", "merges_not_strings", "empty_tokens",
                       "duplicate_tokens", "unknown_model", "long_token"])
    must = True
    if kind in ("scores_short", "scores_long"):
        k = n - 1 if kind == "scores_short" else n + 5
        m.set("tokenizer.ggml.scores", VT.ARRAY, np.zeros(k, np.float32), VT.FLOAT32)
    elif kind in ("types_short", "types_long"):
        k = n - 1 if kind == "types_short" else n + 5
        m.set("tokenizer.ggml.token_type", VT.ARRAY, np.ones(k, np.int32), VT.INT32)
    elif kind == "type_invalid":
        types = np.ones(n, np.int32)
        types[rng.randrange(n)] = rng.choice([-1, 7, 99, 2**31 - 1])
        m.set("tokenizer.ggml.token_type", VT.ARRAY, types, VT.INT32)
    elif kind in ("tokens_fewer", "tokens_more"):
        tokens = tokens[:-1] if kind == "tokens_fewer" else tokens + [f"<extra_{i}>" for i in range(3)]
        m.set("tokenizer.ggml.tokens", VT.ARRAY, tokens, VT.STRING)
    elif kind in ("special_out_of_range", "special_negative"):
        key = rng.choice(["bos_token_id", "eos_token_id", "padding_token_id", "eot_token_id", "unknown_token_id"])
        value = rng.choice([n, n + 1, 2**32 - 1]) if kind == "special_out_of_range" else -1
        m.set(f"tokenizer.ggml.{key}", VT.INT32 if value < 0 else VT.UINT32, value)
        must = False  # llama.cpp ignores such ids (with a warning)
    elif kind == "byte_token_text":
        types = np.ones(n, np.int32)
        types[rng.randrange(1, n)] = 6  # BYTE, but the text is a letter, not <0xNN>
        m.set("tokenizer.ggml.token_type", VT.ARRAY, types, VT.INT32)
    elif kind == "many_control":  # a deep special-token trie: "<", "<<", "<<<", ... as control tokens
        count = rng.choice([600, 1600, 3000])
        new = tokens + ["<" * (i + 1) for i in range(count)]
        resize_vocab(m, new, [3] + [1] * (n - 1) + [3] * count, rng)
        must = False
    elif kind == "merges_not_strings":
        m.set("tokenizer.ggml.merges", VT.ARRAY, np.array([1, 2, 3], np.int32), VT.INT32)
    elif kind == "empty_tokens":
        m.set("tokenizer.ggml.tokens", VT.ARRAY, [], VT.STRING)
    elif kind == "duplicate_tokens":
        tokens[2] = tokens[1]
        m.set("tokenizer.ggml.tokens", VT.ARRAY, tokens, VT.STRING)
        must = False
    elif kind == "unknown_model":
        m.set("tokenizer.ggml.model", VT.STRING, rng.choice(["bert", "", "t5", "rwkv"]))
    elif kind == "long_token":
        tokens[1] = "x" * rng.choice([1000, 100_000])
        m.set("tokenizer.ggml.tokens", VT.ARRAY, tokens, VT.STRING)
        must = False
    return Case("vocab", kind, m.to_bytes(), must_reject=must)


_F16_NONFINITE = [np.float16(np.nan), np.float16(np.inf), np.float16(-np.inf)]


def mutate_nonfinite(model: GGUFModel, rng: random.Random) -> Case:
    """NaN/inf in F32 tensors (norms), in the f16 scales of quantized blocks, in float metadata."""
    m = model.copy()
    kind = rng.choice(["norm", "scale", "scale", "metadata", "scores"])
    if kind == "norm":
        t = rng.choice([t for t in m.tensors if t.ggml_type == QT.F32])
        values = np.frombuffer(t.data, np.float32).copy()
        values[rng.randrange(len(values))] = rng.choice([np.nan, np.inf, -np.inf])
        t.data = values.tobytes()
        what = t.name
    elif kind == "scale":
        t = rng.choice([t for t in m.tensors if t.ggml_type == QT.Q8_0])
        raw = bytearray(t.data)
        n_blocks = len(raw) // 34
        for _ in range(rng.choice([1, 1, 4, n_blocks])):
            at = 34 * rng.randrange(n_blocks)
            raw[at:at + 2] = rng.choice(_F16_NONFINITE).tobytes()
        t.data = bytes(raw)
        what = t.name
    elif kind == "metadata":
        what = f"{m.arch}." + rng.choice(["rope.freq_base", "attention.layer_norm_rms_epsilon", "rope.freq_scale"])
        m.set(what, VT.FLOAT32, rng.choice([float("nan"), float("inf"), -float("inf")]))
    else:
        n = len(m.get("tokenizer.ggml.tokens").value)
        scores = np.zeros(n, np.float32)
        scores[rng.randrange(n)] = np.nan
        m.set("tokenizer.ggml.scores", VT.ARRAY, scores, VT.FLOAT32)
        what = "tokenizer.ggml.scores"
    return Case("nonfinite", f"{kind} {what}", m.to_bytes(), must_reject=True)


def mutate_truncate(data: bytes, rng: random.Random, header_end: int) -> Case:
    cut = rng.randrange(header_end + 64) if rng.random() < 0.8 else rng.randrange(len(data))
    return Case("truncation", f"cut at {cut} of {len(data)}", data[:cut], must_reject=True)


def mutate_bitflip(data: bytes, rng: random.Random, header_end: int) -> Case:
    raw = bytearray(data)
    flips = []
    for _ in range(rng.choice([1, 2, 4, 8, 32])):
        at = rng.randrange(header_end) if rng.random() < 0.9 else rng.randrange(len(raw))
        bit = rng.randrange(8)
        raw[at] ^= 1 << bit
        flips.append(at)
    return Case("bitflip", f"{len(flips)} flips, first at {flips[0]}", bytes(raw))


def mutate_huge_field(data: bytes, rng: random.Random, fields: list[HeaderField]) -> Case:
    raw = bytearray(data)
    f = rng.choice(fields)
    value = rng.choice(HUGE + [0, 1, 2**16, 7, 13, 100, 2**32 + 1])
    raw[f.offset:f.offset + f.size] = (value % 2 ** (8 * f.size)).to_bytes(f.size, "little")
    return Case("huge_count", f"{f.kind} at {f.offset} := {value}", bytes(raw))


def special_path_case(rng: random.Random) -> Case:
    kind = rng.choice(["fifo", "directory", "device", "fifo-symlink"])
    return Case("not_a_file", kind, special_path=kind, must_reject=True)


# ---- hostile chat templates -----------------------------------------------------------------------------------

BIG = "x" * 1000
HOSTILE_TEMPLATES: list[str] = [
    # loops and steps
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}",
    "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}x{% endfor %}{% endfor %}{% endfor %}",
    "{% for i in range(10**9) %}{% endfor %}",
    "{% for i in range(99999999999) %}x{% endfor %}",
    "{{ range(100000)|list|length }}{% for i in range(100000) %}{{ range(100000)|list|length }}{% endfor %}",
    "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
    "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) ~ f(n - 1) }}{% else %}x{% endif %}{% endmacro %}{{ f(60) }}",
    "{% for x in messages recursive %}{{ loop([x, x]) }}{% endfor %}",
    "{% set ns = namespace(i=0) %}{% for _ in range(100000) %}{% for _ in range(100000) %}"
    "{% set ns.i = ns.i + 1 %}{% endfor %}{% endfor %}",
    # integers
    "{% set x = namespace(v=3) %}{% for i in range(100) %}{% set x.v = x.v * x.v %}{% endfor %}{{ x.v }}",
    "{{ ((10**1000)**1000)**1000 }}",
    "{{ (10**1000)**1000 }}",
    "{{ 9**9**9 }}",
    "{{ 2**100000 }}",
    "{{ 10**1000 * 10**1000 * 10**1000 }}",
    "{% set ns = namespace(v=2) %}{% for i in range(64) %}{% set ns.v = ns.v ** 2 %}{% endfor %}{{ ns.v }}",
    "{{ (2**1000)|string|length }}",
    "{{ 1e308 * 10 }}{{ 1 / 0 }}",
    "{{ 10 // 0 }}",
    "{{ 2 ** -1 ** 100 }}",
    "{{ '%d' % (10**1000) }}",
    # strings
    "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
    "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}",
    "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s * 2 %}{% endfor %}{{ ns.s|length }}",
    "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s|replace('a', 'aa')|replace('b', 'bb') %}{% endfor %}{{ ns.s|length }}",
    "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s.replace('a', 'aaaa') %}{% endfor %}",
    "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = [ns.s, ns.s]|join %}{% endfor %}",
    "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = '%s%s' % (ns.s, ns.s) %}{% endfor %}",
    "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = '{}{}'.format(ns.s, ns.s) %}{% endfor %}",
    "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = (ns.s, ns.s)|join('') %}{% endfor %}",
    "{{ 'x' * 1000000000 }}",
    "{{ 'x' * 999999 * 999999 }}",
    "{{ ['x'] * 1000000000 }}",
    "{{ 'x'|center(3000000000) }}",
    "{{ 'x'|center(1000000000) }}",
    "{{ 'x'.center(3000000000) }}",
    "{{ 'x'.ljust(3000000000) }}",
    "{{ 'x'.rjust(3000000000) }}",
    "{{ 'x'.zfill(3000000000) }}",
    "{{ '\\t'.expandtabs(3000000000) }}",
    "{{ 'x'|indent(3000000000) }}",
    "{{ ('x\\n' * 100000)|indent(100000) }}",
    "{{ 'x'|indent(width=3000000000, first=True) }}",
    "{{ 'a b c'|wordwrap(1) }}{{ ('a ' * 500000)|wordwrap(1) }}",
    "{{ ('x' * 900000)|wordwrap(1, break_long_words=True) }}",
    "{{ 'x'|truncate(3000000000) }}",
    "{{ '%3000000000d'|format(1) }}",
    "{{ '%.3000000000f'|format(1.0) }}",
    "{{ '%*d'|format(3000000000, 1) }}",
    "{{ '%3000000000s' % 'x' }}",
    "{{ '{:>3000000000}'.format('x') }}",
    "{{ '{:3000000000}'.format(1) }}",
    "{{ '{0:{1}}'.format('x', 3000000000) }}",
    "{{ {'a': 1}|tojson(indent=3000000000) }}",
    "{{ range(100000)|list|tojson(indent=100000) }}",
    "{{ lipsum(100000, false, 100000, 100000) }}",
    "{{ lipsum(n=1000000) }}",
    "{{ 'x'|filesizeformat }}{{ 10**400|filesizeformat }}",
    "{{ range(100000)|join(',' * 100000) }}",
    "{{ (range(100000)|list) * 100000 }}",
    "{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l|length }}",
    "{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ns.l }}",
    "{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ns.l|tojson }}",
    "{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ns.l|string|length }}",
    "{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ns.l|pprint }}",
    "{% set ns = namespace(d={}) %}{% for i in range(64) %}{% set ns.d = {'a': ns.d, 'b': ns.d} %}{% endfor %}{{ ns.d }}",
    "{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ 'x' ~ ns.l }}",
    "{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ns.l|sum(start=[]) }}",
    "{{ range(100000)|batch(100000)|list|batch(100000)|list }}",
    "{{ (range(100000)|map('string')|join)|list|join(' ' * 1000) }}",
    "{{ ('x' * 999999).split('') }}",
    "{{ ('x' * 999999)|list|join('-' * 999) }}",
    "{{ ('x' * 999999)|replace('x', 'y' * 999999) }}",
    "{{ ('x' * 999999)|replace('', 'yy') }}",
    # sandbox escapes (must stay blocked)
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ self._TemplateReference__context }}",
    "{{ messages.append(1) }}",
    "{{ namespace.__init__ }}",
    "{% include '/etc/passwd' %}",
    "{% import 'os' as os %}",
    "{{ raise_exception('nope') }}",
    # syntax and compile
    "{% for %}",
    "{{ " * 5000,
    "{% if x %}" * 3000 + "{% endif %}" * 3000,
    "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}",
    "{{ " + "[" * 3000 + "]" * 3000 + " }}",
    "{{ " + "1 + " * 20000 + "1 }}",
    "{% set x %}" * 2000 + "{% endset %}" * 2000,
    "x" * 3_000_000,
    "{{ 'x' }}" * 300_000,
    "{% for m in messages %}{{ m.content }}{% endfor %}" * 50_000,
]


def template_case(model: GGUFModel, rng: random.Random, index: int | None = None) -> Case:
    m = model.copy()
    i = rng.randrange(len(HOSTILE_TEMPLATES)) if index is None else index
    m.set("tokenizer.chat_template", VT.STRING, HOSTILE_TEMPLATES[i])
    return Case("template", f"#{i} {_short(HOSTILE_TEMPLATES[i])}", m.to_bytes(), template_only=True)


# ---- KV state files ------------------------------------------------------------------------------------------

STATE_MAGIC = b"GGRTKV01"


def split_state(data: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack_from("<I", data, len(STATE_MAGIC))
    start = len(STATE_MAGIC) + 4
    return json.loads(data[start:start + n]), data[start + n:]


def join_state(header: dict | bytes, body: bytes) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return STATE_MAGIC + struct.pack("<I", len(raw)) + raw + body


def mutate_state(data: bytes, rng: random.Random) -> Case:
    """A saved KV state (f32 cache) corrupted: bytes, header values, nesting, token ids, non-finite rows."""
    header, body = split_state(data)
    n = header["n_tokens"]
    kind = rng.choice(["truncate", "bitflip", "header_value", "header_value", "nested", "header_len",
                       "token_ids", "nonfinite_rows", "not_json", "extra_bytes"])
    must = True
    if kind == "truncate":
        return Case("state", kind, data[:rng.randrange(len(data))], must_reject=True)
    if kind == "bitflip":
        raw = bytearray(data)
        for _ in range(rng.choice([1, 4, 16])):
            raw[rng.randrange(len(STATE_MAGIC) + 4 + 200)] ^= 1 << rng.randrange(8)
        return Case("state", kind, bytes(raw))
    if kind == "header_value":
        key = rng.choice(["version", "n_tokens", "n_layers", "n_kv_heads", "row_bytes", "kv_type", "model"])
        value = rng.choice([True, False, None, -1, 0, 1.0, 2**64, "1", [1], {"a": 1}, 10**30, n + 1, n - 1])
        must = not (value == header[key] and type(value) is type(header[key]))
        header[key] = value
        return Case("state", f"{key} := {value!r}", join_state(header, body), must_reject=must)
    if kind == "nested":
        depth = rng.choice([100, 5000, 30000])
        raw = json.dumps(header)[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"
        return Case("state", f"nested {depth}", join_state(raw.encode(), body), must_reject=depth > 100)
    if kind == "header_len":
        raw = bytearray(data)
        raw[len(STATE_MAGIC):len(STATE_MAGIC) + 4] = struct.pack("<I", rng.choice([0, 1, 2**16, 2**32 - 1]))
        return Case("state", kind, bytes(raw), must_reject=True)
    if kind == "token_ids":
        tokens = np.frombuffer(body[:4 * n], np.int32).copy()
        tokens[rng.randrange(n)] = rng.choice([-1, 2**31 - 1, 10**6])
        return Case("state", kind, join_state(header, tokens.tobytes() + body[4 * n:]), must_reject=True)
    if kind == "nonfinite_rows":
        rows = np.frombuffer(body[4 * n:], np.float32).copy()
        rows[rng.randrange(len(rows))] = rng.choice([np.nan, np.inf, -np.inf])
        return Case("state", kind, join_state(header, body[:4 * n] + rows.tobytes()), must_reject=True)
    if kind == "not_json":
        return Case("state", kind, join_state(rng.choice([b"\xff\xfe", b"[1,2]", b"nul", b"{" * 1000]), body),
                    must_reject=True)
    return Case("state", kind, data + b"\0" * rng.choice([1, 4096]), must_reject=True)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

