#!/usr/bin/env python3
"""Speculative decoding benchmark: Qwen2.5-Coder-1.5B drafted by Qwen2.5-Coder-0.5B, and prompt-lookup drafts.

    .venv/bin/python scripts/bench_spec.py [-t 2] [-n 64] [--draft-max 4 8 16] [--draft MODEL] [--json]

--draft takes another draft file, e.g. the 0.5B requantized to Q4_0 by scripts/requantize.py (a lighter draft
lowers c).

Reports decode tokens/s with and without speculation at temperature 0 and 0.7, the acceptance rate α, tokens
per target pass, and the cost ratio c = (draft decode time per token) / (target decode time per token), so the
speedup can be read against the model (1 − α^(k+1)) / ((1 − α)(1 + k·c)) of Leviathan et al.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gguf_runtime.api import LLM  # noqa: E402
from gguf_runtime.sampling import SamplingParams  # noqa: E402

CODE_PROMPTS = [
    "<|im_start|>user\nWrite a Python function that parses a CSV file and returns the average of each numeric "
    "column.<|im_end|>\n<|im_start|>assistant\n",
    "def binary_search(items, target):\n    \"\"\"Return the index of target in the sorted list items, or -1.\"\"\"\n",
]
EDIT_PROMPT = (
    "<|im_start|>user\nRename the variable `total` to `running_sum` in this code and return the whole code:\n"
    "```python\ndef summarize(values):\n    total = 0\n    count = 0\n    for v in values:\n        total += v\n"
    "        count += 1\n    mean = total / count if count else 0.0\n    return {'total': total, 'count': count, "
    "'mean': mean}\n```<|im_end|>\n<|im_start|>assistant\n"
)


def decode_rate(llm: LLM, prompt: str, params: SamplingParams) -> dict:
    llm.reset()
    gen = llm.generate_stream(prompt, params)
    t0 = time.perf_counter()
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            result = stop.value
            break
    s = result.stats
    out = {"tokens": s.generated_tokens, "decode_tps": s.decode_tokens_per_second,
           "wall_s": time.perf_counter() - t0}
    if s.speculative is not None:
        out.update(acceptance=s.speculative.acceptance_rate, tokens_per_pass=s.speculative.tokens_per_pass,
                   mean_k=(sum(s.speculative.k_history) / len(s.speculative.k_history)
                           if s.speculative.k_history else 0.0), paused=s.speculative.paused)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-n", "--max-tokens", type=int, default=64)
    ap.add_argument("--draft-max", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--draft", default="qwen2.5-coder-0.5b", help="the draft model (a catalog name or a path)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = []

    def record(name: str, llm: LLM, prompts: list[str], temperature: float) -> dict:
        params = SamplingParams(temperature=temperature, max_tokens=args.max_tokens, ignore_eos=True, seed=1)
        decode_rate(llm, prompts[0], SamplingParams(temperature=0, max_tokens=2))  # warm-up (JIT, caches)
        runs = [decode_rate(llm, p, params) for p in prompts]
        row = {"config": name, "temperature": temperature,
               **{k: sum(r[k] for r in runs) / len(runs) for k in runs[0] if k != "tokens"}}
        rows.append(row)
        if not args.json:
            extra = (f"  α={row['acceptance']:.2f}  tokens/pass={row['tokens_per_pass']:.2f}  "
                     f"mean k={row['mean_k']:.1f}  paused={row['paused']:.1f}" if "acceptance" in row else "")
            print(f"{name:<28} T={temperature:<4} {row['decode_tps']:7.2f} tok/s{extra}", flush=True)
        return row

    target = LLM("qwen2.5-coder-1.5b", n_ctx=1024, n_threads=args.threads)
    draft_alone = LLM(args.draft, n_ctx=1024, n_threads=args.threads)
    base = {t: record("target alone", target, CODE_PROMPTS, t)["decode_tps"] for t in (0.0, 0.7)}
    draft_tps = record("draft alone", draft_alone, CODE_PROMPTS, 0.0)["decode_tps"]
    del draft_alone
    cost_ratio = base[0.0] / draft_tps
    for k in args.draft_max:
        spec = LLM("qwen2.5-coder-1.5b", n_ctx=1024, n_threads=args.threads, draft_model=args.draft,
                   draft_max=k)
        for t in (0.0, 0.7):
            row = record(f"draft model, draft_max={k}", spec, CODE_PROMPTS, t)
            row["speedup"] = row["decode_tps"] / base[t]
            a, kk = row["acceptance"], max(row["mean_k"], 1.0)
            row["model_speedup"] = (1 - a ** (kk + 1)) / ((1 - a) * (1 + kk * cost_ratio)) if a < 1 else None
        del spec
    ngram = LLM("qwen2.5-coder-1.5b", n_ctx=1024, n_threads=args.threads, speculative="ngram")
    plain_edit = record("edit prompt, target alone", target, [EDIT_PROMPT], 0.0)["decode_tps"]
    row = record("edit prompt, n-gram drafts", ngram, [EDIT_PROMPT], 0.0)
    row["speedup"] = row["decode_tps"] / plain_edit
    summary = {"threads": args.threads, "cost_ratio_c": cost_ratio, "rows": rows}
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"\ncost ratio c (draft/target time per token) = {cost_ratio:.2f}")
        for r in rows:
            if "speedup" in r:
                model = f" (model: {r['model_speedup']:.2f}x)" if r.get("model_speedup") else ""
                print(f"{r['config']:<28} T={r['temperature']:<4} speedup {r['speedup']:.2f}x{model}")


if __name__ == "__main__":
    main()
