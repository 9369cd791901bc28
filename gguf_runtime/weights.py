"""Fetching a model's tensors by name with the shape its hyperparameters require (llama_model_loader's
create_tensor check), so the kernels only ever see the shapes they are written for.

Shapes in messages are in ggml's `ne` order (innermost first: a matrix of n_out rows by n_in columns is
[n_in, n_out]), which is what llama.cpp and `gguf-dump` print. As in ggml, trailing dimensions of size 1
do not count ([576] and [576, 1] are the same vector).
"""

from __future__ import annotations

import numpy as np

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
        return self._gguf.tensor_data(name).reshape(n)

    def check_all_used(self, what: str) -> None:
        """Refuse a file holding tensors nobody asked for (`what` names the architecture and layer count)."""
        extra = sorted(set(self._gguf.tensors) - self._used)
        if extra:
            more = f" and {len(extra) - 3} more" if len(extra) > 3 else ""
            raise GGUFError(f"{self._gguf.path.name}: wrong number of tensors: {what} uses "
                            f"{len(self._used)}, the file has {len(self._gguf.tensors)} "
                            f"(unexpected: {', '.join(extra[:3])}{more})")


def _padded(ne: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(ne) + (1,) * (MAX_DIMS - len(ne))
