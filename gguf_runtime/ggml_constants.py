"""gguf-py's constants (GGML tensor type ids and block sizes, GGUF value types), without the rest of gguf-py.

`import gguf.constants` first runs gguf-py's package `__init__`, which imports its writer, reader, vocab
(with sentencepiece), metadata (with yaml) and lazy (with logging) modules: 57 ms of a warm start to the
first token of ~0.8 s (measured 2026-12-07), for tables that take 12 ms. gguf-py's constants.py imports
nothing of its own package, so it is executed here from its file, as a private module of ours; should a
later release move it, the plain import is the fallback. Its enums are IntEnums: they compare and hash
equal to gguf-py's own, so a caller may pass either.
"""

from __future__ import annotations

import importlib.util
import os
import sys


def _load():
    spec = importlib.util.find_spec("gguf")  # locates the package without running it
    path = os.path.join(os.path.dirname(spec.origin), "constants.py") if spec and spec.origin else None
    if path is None or not os.path.isfile(path):
        import gguf.constants

        return gguf.constants
    name = f"{__name__}._gguf_constants"
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # as an import would: its enums pickle by reference (numba's cache keys do)
    module_spec.loader.exec_module(module)
    return module


_constants = _load()
GGML_QUANT_SIZES = _constants.GGML_QUANT_SIZES
GGMLQuantizationType = _constants.GGMLQuantizationType
GGUFValueType = _constants.GGUFValueType
LlamaFileType = _constants.LlamaFileType
