#!/usr/bin/env python3
"""Accuracy cost of a quantized KV cache: perplexity with each cache type on tests/fixtures/ppl_text.txt.

    .venv/bin/python scripts/kv_perplexity.py [-m smollm2-135m -m qwen2.5-coder-0.5b] [-k f32 -k f16 -k q8_0]
        [--n-ctx 512] [--chunks 4] [--json]

llama-perplexity's method (gguf_runtime.perplexity), the same tokens for every cache type; prints the
perplexity, its change against f32, and the cache's bytes per position.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gguf_runtime.api import LLM  # noqa: E402
from gguf_runtime.perplexity import perplexity  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", action="append")
    ap.add_argument("-k", "--kv-type", action="append")
    ap.add_argument("--n-ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = []
    for model in args.model or ["smollm2-135m", "qwen2.5-coder-0.5b"]:
        for kv_type in args.kv_type or ["f32", "f16", "q8_0", "q4_0"]:
            llm = LLM(model, n_ctx=args.n_ctx, kv_cache_dtype=kv_type)
            tokens = llm.tokenize((ROOT / "tests" / "fixtures" / "ppl_text.txt").read_text(), add_special=False)
            bos = llm.tokenizer.bos_id if llm.tokenizer.add_bos else None
            result = perplexity(tokens, args.n_ctx, llm.logits, bos, args.chunks)
            rows.append({"model": model, "kv_type": kv_type, "ppl": result.ppl, "chunks": result.chunks,
                         "bytes_per_token": llm.kv_bytes_per_token})
            base = next(r["ppl"] for r in rows if r["model"] == model)
            if not args.json:
                print(f"{model:20} {kv_type:6} ppl {result.ppl:8.4f} ({100 * (result.ppl / base - 1):+.2f}% vs the "
                      f"first type)  {llm.kv_bytes_per_token / 1024:.1f} KiB/token", flush=True)
    if args.json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
