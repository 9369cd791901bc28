"""The supported tensor types, keyed by ggml type id, and the one error for the rest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import UnsupportedQuantError  # noqa: F401  (re-exported: its old home)
from ..ggml_constants import GGML_QUANT_SIZES, GGMLQuantizationType

from . import floats, iq4_nl, iq4_xs, q2_k, q3_k, q4_0, q4_1, q4_k, q5_0, q5_1, q5_k, q6_k, q8_0

# ggml type ids as plain ints (numba folds module-level ints into the kernels' dispatch)
F32, F16, BF16 = int(GGMLQuantizationType.F32), int(GGMLQuantizationType.F16), int(GGMLQuantizationType.BF16)
Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = (int(GGMLQuantizationType[n]) for n in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"))
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K = (int(GGMLQuantizationType[n]) for n in ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"))
IQ4_NL, IQ4_XS = int(GGMLQuantizationType.IQ4_NL), int(GGMLQuantizationType.IQ4_XS)

# how a type wants the activation for its dot products (see activation.py)
ACT_F32, ACT_Q8_0, ACT_Q8_K = 0, 1, 2
_ACTIVATIONS = {"f32": ACT_F32, "q8_0": ACT_Q8_0, "q8_K": ACT_Q8_K}




@dataclass(frozen=True)
class QuantType:
    """One ggml tensor type: its block geometry and its kernels.

    dequantize_row(w: uint8[row_bytes], y: float32[n_cols]) and dot_row(w, x, xq, xd, xs) -> float32 are numba
    functions on one row; quantize_rows(x: float32[R, K], out: uint8[R, row_bytes]) fills whole rows.
    """

    ggml_type: int
    name: str
    block_size: int
    type_size: int
    activation: int
    dequantize_row: Callable
    dot_row: Callable
    quantize_rows: Callable

    def row_bytes(self, n_cols: int) -> int:
        if n_cols % self.block_size:
            raise ValueError(f"{self.name}: row length {n_cols} is not a multiple of the block size {self.block_size}")
        return n_cols // self.block_size * self.type_size

    def n_cols(self, row_bytes: int) -> int:
        if row_bytes % self.type_size:
            raise ValueError(f"{self.name}: {row_bytes} bytes per row is not a multiple of the block size "
                             f"{self.type_size}")
        return row_bytes // self.type_size * self.block_size


def _block_type(ggml_type: int, module) -> QuantType:
    block_size, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    assert (block_size, type_size) == (module.BLOCK_SIZE, module.TYPE_SIZE), module.__name__
    return QuantType(ggml_type, GGMLQuantizationType(ggml_type).name, block_size, type_size,
                     _ACTIVATIONS[module.ACTIVATION], module.dequantize_row, module.dot_row, module.quantize_rows)


def _float_type(ggml_type: int, suffix: str) -> QuantType:
    _, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    return QuantType(ggml_type, GGMLQuantizationType(ggml_type).name, 1, type_size, ACT_F32,
                     getattr(floats, "dequantize_row_" + suffix), getattr(floats, "dot_row_" + suffix),
                     getattr(floats, "quantize_rows_" + suffix))


QTYPES: dict[int, QuantType] = {
    F32: _float_type(F32, "f32"),
    F16: _float_type(F16, "f16"),
    BF16: _float_type(BF16, "bf16"),
    **{t: _block_type(t, m) for t, m in (
        (Q4_0, q4_0), (Q4_1, q4_1), (Q5_0, q5_0), (Q5_1, q5_1), (Q8_0, q8_0),
        (Q2_K, q2_k), (Q3_K, q3_k), (Q4_K, q4_k), (Q5_K, q5_k), (Q6_K, q6_k),
        (IQ4_NL, iq4_nl), (IQ4_XS, iq4_xs))},
}


def type_name(ggml_type: int) -> str:
    try:
        return GGMLQuantizationType(ggml_type).name
    except ValueError:
        return f"unknown type {ggml_type}"


def get_qtype(ggml_type: int, tensor_name: str = "") -> QuantType:
    """The QuantType for a ggml type id; UnsupportedQuantError (naming the tensor and the type) otherwise."""
    qtype = QTYPES.get(int(ggml_type))
    if qtype is None:
        where = f"tensor {tensor_name!r}" if tensor_name else "tensor"
        supported = ", ".join(q.name for q in QTYPES.values())
        raise UnsupportedQuantError(f"{where} has type {type_name(ggml_type)} ({int(ggml_type)}), which "
                                    f"gguf-runtime cannot compute with; supported: {supported}")
    return qtype
