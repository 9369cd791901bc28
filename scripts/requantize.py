#!/usr/bin/env python3
"""Requantize a GGUF file's matrices to one type with our own quantizers (llama.cpp's reference ones, no
importance matrix), keeping its metadata, its 1-D tensors (norms, biases) and any matrix whose rows do not fit
the type's blocks. For a lighter speculative draft (#17: the 0.5B draft read 46 % of the target's bytes):

    .venv/bin/python scripts/requantize.py qwen2.5-coder-0.5b /tmp/qwen0.5b-q4_0.gguf --type Q4_0
    .venv/bin/python scripts/bench_spec.py --draft /tmp/qwen0.5b-q4_0.gguf

Rows are converted a slice at a time (dequantized to float32, quantized again), so memory stays near the
output file's size; quality drops (a second rounding), which the draft's acceptance rate then shows.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gguf_runtime.catalog import resolve_model  # noqa: E402
from gguf_runtime.errors import UserInputError  # noqa: E402
from gguf_runtime.gguf_file import GGUFFile  # noqa: E402
from gguf_runtime.quants import dequantize, quantize  # noqa: E402
from gguf_runtime.quants.registry import QTYPES  # noqa: E402

ROWS_AT_ONCE = 4096


def requantize(src: Path, dst: Path, target: int) -> dict:
    import gguf

    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(dst, arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = field.contents()
        types = field.types
        if key == "general.file_type":  # llama.cpp's name for a file of one type, where it has one
            name = f"MOSTLY_{gguf.GGMLQuantizationType(target).name}"
            value = int(gguf.LlamaFileType[name]) if name in gguf.LlamaFileType.__members__ else value
        writer.add_key_value(key, value, types[0], types[1] if len(types) > 1 else None)
    qtype = QTYPES[target]
    counts: dict[str, int] = {}
    for t in reader.tensors:
        cols = int(t.shape[0])  # ggml order: the row length first
        rows = int(np.prod(t.shape[1:])) if len(t.shape) > 1 else 1
        kind = gguf.GGMLQuantizationType(t.tensor_type)
        if len(t.shape) < 2 or cols % qtype.block_size or int(kind) not in QTYPES:
            writer.add_tensor(t.name, t.data, raw_dtype=kind)  # as it is
            counts[kind.name] = counts.get(kind.name, 0) + 1
            continue
        raw = np.asarray(t.data).reshape(rows, -1)
        out = np.empty((rows, qtype.row_bytes(cols)), np.uint8)
        for r0 in range(0, rows, ROWS_AT_ONCE):
            out[r0:r0 + ROWS_AT_ONCE] = quantize(dequantize(raw[r0:r0 + ROWS_AT_ONCE], int(kind)), target)
        writer.add_tensor(t.name, out, raw_dtype=gguf.GGMLQuantizationType(target))
        counts[qtype.name] = counts.get(qtype.name, 0) + 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return counts


def main() -> None:
    import gguf

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a GGUF path or a catalog name")
    ap.add_argument("out", type=Path)
    ap.add_argument("--type", default="Q4_0", help="the matrices' new type (a GGML type name)")
    args = ap.parse_args()
    target = gguf.GGMLQuantizationType.__members__.get(args.type.upper())
    if target is None or int(target) not in QTYPES:
        sys.exit(f"requantize: {args.type} is not a type this runtime quantizes")
    t0 = time.perf_counter()
    try:
        src = resolve_model(args.model)
        GGUFFile(src).close()  # our reader's checks first (bounds, overlaps, types): a hostile file is one line
        counts = requantize(src, args.out, int(target))
    except (UserInputError, OSError) as e:
        sys.exit(f"requantize: {e}")
    print(f"{args.out}: {args.out.stat().st_size / 1e6:.1f} MB (from {src.stat().st_size / 1e6:.1f} MB) in "
          f"{time.perf_counter() - t0:.1f} s; tensors by type: {counts}")


if __name__ == "__main__":
    main()
