#!/usr/bin/env python3
"""Record llama.cpp's logits and greedy tokens on the tiny random-weight models of every architecture.

The models are written by tests/tiny_model.py (runtime interpreter) into a directory; this script (the
llama-cpp-python interpreter, `make fixtures-env`) runs each and stores tests/fixtures/archs/<case>.npz:
the file's sha256 (the test rewrites the model and checks it is the same file), the token ids, llama.cpp's
greedy continuation and the logits after every token, and llama.cpp's own noise floor (the same tokens in
one batch instead of one by one).

    python tests/tiny_model.py /tmp/tiny
    .fixtures-venv/bin/python scripts/make_fixtures.py archs /tmp/tiny
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "archs"
N_PROMPT = 32  # longer than the tiny models' sliding windows (8), so sliding layers drop positions
N_GREEDY = 16
N_KEEP, N_DISCARD = 4, 12  # the context shift recorded after the greedy run


def record(path: Path, threads: int) -> dict[str, np.ndarray]:
    from llama_cpp import Llama

    llm = Llama(str(path), n_ctx=128, n_batch=128, n_threads=threads, logits_all=True, verbose=False)
    n_vocab = llm.n_vocab()
    ids = np.random.default_rng(0).integers(1, n_vocab, N_PROMPT).tolist()
    llm.reset()
    llm.eval(ids)
    rows = [np.array(llm.scores[i], dtype=np.float32) for i in range(len(ids))]
    greedy = []
    for _ in range(N_GREEDY):
        greedy.append(int(np.argmax(rows[-1])))
        llm.eval([greedy[-1]])
        rows.append(np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32))
    logits = np.stack(rows[:-1])  # (N_PROMPT + N_GREEDY - 1, V): after each prompt and continuation token

    # context shift as llama.cpp's examples do it: drop N_DISCARD positions after the first N_KEEP, slide the
    # rest down (their keys re-rotated), then evaluate one more token
    n = llm.n_tokens
    llm._ctx.kv_cache_seq_rm(0, N_KEEP, N_KEEP + N_DISCARD)
    llm._ctx.kv_cache_seq_shift(0, N_KEEP + N_DISCARD, n, -N_DISCARD)
    kept = (ids + greedy)[:N_KEEP] + (ids + greedy)[N_KEEP + N_DISCARD:n]
    llm.input_ids[:len(kept)] = kept
    llm.n_tokens = len(kept)
    llm.eval([greedy[-1]])
    shifted = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)

    llm.reset()
    llm.eval(ids + greedy[:-1])
    batch = np.array(llm.scores[:len(logits)], dtype=np.float32)
    return {
        "sha256": np.array(hashlib.sha256(path.read_bytes()).hexdigest()),
        "ids": np.array(ids, np.int64),
        "greedy": np.array(greedy, np.int64),
        "logits": logits,
        "self_max_diff": np.array(np.abs(batch - logits).max(), np.float32),
        "shift": np.array([N_KEEP, N_DISCARD], np.int64),
        "shifted_logits": shifted,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", type=Path, help="directory of tiny GGUFs from tests/tiny_model.py")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    for path in sorted(args.models.glob("*.gguf")):
        data = record(path, args.threads)
        np.savez_compressed(OUT / f"{path.stem}.npz", **data)
        print(f"{path.stem}: llama.cpp batch vs sequential max diff {float(data['self_max_diff']):.2e}",
              file=sys.stderr)


if __name__ == "__main__":
    main()
