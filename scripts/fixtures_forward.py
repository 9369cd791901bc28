#!/usr/bin/env python3
"""Record llama.cpp's logits, greedy continuations and perplexity as forward-pass parity fixtures.

Runs under an interpreter with llama-cpp-python (`make fixtures-env`), never under the runtime's. Token ids
come from llama.cpp's own tokenizer, so these fixtures test the forward pass independently of ours.

    .fixtures-venv/bin/python scripts/fixtures_forward.py [MODEL ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from gguf_runtime.catalog import model_path  # noqa: E402  (stdlib only)
from gguf_runtime.perplexity import perplexity as ppl_of  # noqa: E402  (numpy only)

OUT = ROOT / "tests" / "fixtures" / "forward"
MODELS = ("smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "gemma-3-270m")
TOP_N = 20
N_GREEDY = 64
PPL_CTX = 256
PPL_CHUNKS = 4
# Per-model changes. gemma-3: a smaller fixture (its 262k-token output projection makes every row costly),
# plus a sequence longer than its sliding window (512), whose last rows only a correct window gets right.
OVERRIDES = {"gemma-3-270m": dict(prompts=("prose", "code"), n_greedy=32, ppl_chunks=2, long=(608, 640))}

PROMPTS = {
    "prose": "The history of the printing press begins in the fifteenth century, when",
    "code": "def quicksort(items):\n    \"\"\"Sort a list using the quicksort algorithm.\"\"\"\n",
    "chat": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
            "What is the capital of France? Answer in one word.<|im_end|>\n<|im_start|>assistant\n",
    "list": "Three reasons to learn a second language:\n1.",
}


def record(name: str, threads: int) -> dict:
    from llama_cpp import Llama

    path = model_path(name)
    size = OVERRIDES.get(name, {})
    n_ctx = max(512, size.get("long", (0, 0))[1])
    llm = Llama(str(path), n_ctx=n_ctx, n_batch=512, n_threads=threads, logits_all=True, verbose=False)
    n_greedy = size.get("n_greedy", N_GREEDY)
    out: dict = {"model": name, "file": path.name, "top_n": TOP_N, "prompts": {}}
    for key in size.get("prompts", PROMPTS):
        text = PROMPTS[key]
        ids = llm.tokenize(text.encode(), add_bos=True, special=True)
        llm.reset()
        llm.eval(ids)
        rows = [np.array(llm.scores[i], dtype=np.float32) for i in range(len(ids))]  # prompt positions
        greedy = []
        for _ in range(n_greedy):
            t = int(np.argmax(rows[-1]))
            greedy.append(t)
            llm.eval([t])
            rows.append(np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32))
        scores = np.stack(rows[:-1])  # (T + n_greedy - 1, V): logits after each prompt and continuation token
        top = np.argsort(-scores, axis=1, kind="stable")[:, :TOP_N]
        # llama.cpp's own noise floor: the same sequence in one batch instead of token by token
        llm.reset()
        llm.eval(ids + greedy[:-1])
        batch_top1 = np.array(llm.scores[:len(scores)], dtype=np.float32).argmax(axis=1)
        out["prompts"][key] = {
            "text": text,
            "ids": ids,
            "greedy": greedy,
            # rows cover ids + greedy[:-1]: the prompt by one batched pass, the continuation one token at a time
            "top_ids": top.tolist(),
            "top_logits": np.take_along_axis(scores, top, axis=1).round(4).tolist(),
            "batch_top1_agreement": float((batch_top1 == top[:, 0]).mean()),
        }
    out["perplexity"] = perplexity(llm, size.get("ppl_chunks", PPL_CHUNKS))
    if "long" in size:
        out["long"] = long_rows(llm, *size["long"])
    return out


def long_rows(llm, first: int, end: int) -> dict:
    """Top logits of rows first..end-1 of the perplexity text's first `end` tokens, evaluated in one go."""
    tokens = llm.tokenize((ROOT / "tests" / "fixtures" / "ppl_text.txt").read_text().encode(), add_bos=True)[:end]
    llm.reset()
    llm.eval(tokens)
    scores = np.array(llm.scores[first:end], dtype=np.float32)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :TOP_N]
    return {"ids": tokens, "first": first, "top_ids": top.tolist(),
            "top_logits": np.take_along_axis(scores, top, axis=1).round(4).tolist()}


def perplexity(llm, n_chunks: int) -> dict:
    """llama.cpp's logits scored by the runtime's own llama-perplexity implementation (numpy only)."""
    text = (ROOT / "tests" / "fixtures" / "ppl_text.txt").read_text()
    tokens = llm.tokenize(text.encode(), add_bos=True, special=False)

    def logits_of(chunk: list[int]) -> np.ndarray:
        llm.reset()
        llm.eval(chunk)
        return np.array(llm.scores[:len(chunk)], dtype=np.float32)

    r = ppl_of(tokens, PPL_CTX, logits_of, llm.token_bos() if llm._model.add_bos_token() else None, n_chunks)
    return {"n_ctx": PPL_CTX, "chunks": r.chunks, "ppl": r.ppl, "tokens": tokens[:r.chunks * PPL_CTX]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=list(MODELS))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        data = record(name, args.threads)
        (OUT / f"{name}.json").write_text(json.dumps(data, separators=(",", ":")))
        print(f"{name}: ppl {data['perplexity']['ppl']:.4f}")


if __name__ == "__main__":
    main()
