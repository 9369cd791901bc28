"""Fetching a model's tensors by name with the shape its hyperparameters require (llama_model_loader's
create_tensor check), so the kernels only ever see the shapes they are written for.

Shapes in messages are in ggml's `ne` order (innermost first: a matrix of n_out rows by n_in columns is
[n_in, n_out]), which is what llama.cpp and `gguf-dump` print. As in ggml, trailing dimensions of size 1
do not count ([576] and [576, 1] are the same vector).
"""

from __future__ import annotations

import numpy as np

from .ggml_constants import GGML_QUANT_SIZES, GGMLQuantizationType
from .gguf_file import MAX_DIMS, GGUFError, GGUFFile, TensorInfo
from .quants import QMatrix


class Weights:
    """The tensors of one GGUF file, handed out after a shape check; remembers which were taken so that
    `check_all_used` can refuse files with tensors the architecture does not use (llama.cpp: "wrong number
    of tensors")."""

    def __init__(self, gguf: GGUFFile):
        self._gguf = gguf
        self._used: set[str] = set()

    def has(self, name: str) -> bool:
        return name in self._gguf.tensors

    def info(self, name: str, ne: tuple[int, ...]) -> TensorInfo:
        """The tensor's index entry, after checking its shape is `ne` (ggml order)."""
        info = self._gguf.tensors.get(name)
        if info is None:
            raise GGUFError(f"tensor {name} is missing from {self._gguf.path.name}")
        got = tuple(reversed(info.shape))
        if _padded(got) != _padded(ne):
            raise GGUFError(f"tensor {name}: shape {list(got)} (ggml ne order), expected {list(ne)}")
        self._used.add(name)
        return info

    def matrix(self, name: str, n_out: int, n_in: int) -> QMatrix:
        """A weight matrix y = W x with n_out outputs and n_in inputs (ggml ne [n_in, n_out])."""
        info = self.info(name, (n_in, n_out))
        return QMatrix(self.rows(name, info, n_out), info.ggml_type, name)

    def rows(self, name: str, info: TensorInfo, n_rows: int) -> np.ndarray:
        """The tensor's data as n_rows rows (trailing size-1 dims dropped): what QMatrix and embed_rows read."""
        data = self._gguf.tensor_data(name)
        return data.reshape(n_rows, data.shape[-1]) if data.ndim != 2 else data

    def vector(self, name: str, n: int, required: bool = True) -> np.ndarray | None:
        """An F32 vector of n values (a norm weight, a bias); None when absent and not required."""
        if not required and not self.has(name):
            return None
        info = self.info(name, (n,))
        if info.type_name != "F32":
            raise GGUFError(f"tensor {name}: expected type F32, found {info.type_name}")
        data = self._gguf.tensor_data(name).reshape(n)
        if not np.isfinite(data).all():  # small: always checked (a norm or bias poisons every token)
            raise GGUFError(f"tensor {name}: holds NaN or infinite values")
        return data

    def check_all_used(self, what: str) -> None:
        """Refuse a file holding tensors nobody asked for (`what` names the architecture and layer count)."""
        extra = sorted(set(self._gguf.tensors) - self._used)
        if extra:
            more = f" and {len(extra) - 3} more" if len(extra) > 3 else ""
            raise GGUFError(f"{self._gguf.path.name}: wrong number of tensors: {what} uses "
                            f"{len(self._used)}, the file has {len(self._gguf.tensors)} "
                            f"(unexpected: {', '.join(extra[:3])}{more})")


# Byte offsets of the f16 scales (d, and dmin/m where there is one) inside one block of each quantized type;
# negative offsets count from the block's end (the K-quants that store d last).
_SCALE_OFFSETS = {"Q4_0": (0,), "Q4_1": (0, 2), "Q5_0": (0,), "Q5_1": (0, 2), "Q8_0": (0,), "IQ4_NL": (0,),
                  "IQ4_XS": (0,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q2_K": (-4, -2), "Q3_K": (-2,), "Q6_K": (-2,)}


def check_finite_scales(gguf: GGUFFile) -> None:
    """Refuse a file whose block scales (or F32/F16 values) include NaN or infinity: one strided pass over
    every tensor. It reads (pages in) the whole file, which is why loading does it only when asked
    (`load(..., check_weights=True)`); without it a poisoned computation stops with NonFiniteError."""
    for info in gguf.tensors.values():
        data = gguf.tensor_data(info.name)
        if info.type_name in ("F32", "F16"):
            bad = not np.isfinite(data).all()
        elif info.type_name == "BF16":
            bad = bool(((data & 0x7F80) == 0x7F80).any())
        elif info.type_name in _SCALE_OFFSETS:
            _, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(info.ggml_type)]
            blocks = data.reshape(-1, type_size)
            bad = any(not np.isfinite(blocks[:, at % type_size:at % type_size + 2].copy().view(np.float16)).all()
                      for at in _SCALE_OFFSETS[info.type_name])
        else:
            continue
        if bad:
            raise GGUFError(f"tensor {info.name}: NaN or infinite values in its {info.type_name} scales or data")


def _padded(ne: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(ne) + (1,) * (MAX_DIMS - len(ne))
