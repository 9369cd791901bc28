"""What structured output costs per decoded token: the same greedy decode with and without a JSON-schema
constraint, through LLM.generate (the engine), on SmolLM2-135M and Qwen2.5-Coder-1.5B.

    python scripts/bench_structured.py [--models ...] [--tokens 64] [--repeat 3] [--threads N]

Both runs decode exactly --tokens tokens (the unconstrained one ignores EOS, the schema asks for a long array so
the constrained one is cut by the limit too), so their decode times compare directly. Reported per model:
decode ms/token for each (median over --repeat alternating runs), the ratio (target <= 1.10), and the time the
constraint itself took per token (mask + accept, measured by wrapping GrammarConstraint's methods), which is
the part that does not depend on the machine's load. On a shared machine the decode figures are noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gguf_runtime import LLM, SamplingParams, StructuredOutputsParams  # noqa: E402
from gguf_runtime.structured import grammar  # noqa: E402

SCHEMA = {"type": "array", "minItems": 40, "items": {
    "type": "object", "properties": {"id": {"type": "integer"}, "name": {"type": "string"},
                                     "role": {"enum": ["admin", "user", "guest"]}},
    "required": ["id", "name", "role"], "additionalProperties": False}}
PROMPT = "List forty users of a web site as a JSON array of objects with id, name and role."


class ConstraintTimer:
    """Adds up the wall time spent in GrammarConstraint.mask and .accept."""

    def __init__(self) -> None:
        self.seconds, self.calls = 0.0, 0
        for name in ("mask", "accept"):
            original = getattr(grammar.GrammarConstraint, name)
            setattr(grammar.GrammarConstraint, name, self._timed(original, count=name == "mask"))

    def _timed(self, method, count: bool):
        def wrapper(constraint, *args):
            t0 = time.perf_counter()
            try:
                return method(constraint, *args)
            finally:
                self.seconds += time.perf_counter() - t0
                self.calls += count
        return wrapper


def decode_ms_per_token(llm: LLM, prompt: str, params: SamplingParams) -> float:
    out = llm.generate(prompt, params)[0].outputs[0]
    stats = out.metrics
    steps = max(stats.generated_tokens - 1, 1)  # the first token comes from the prefill
    return 1e3 * stats.decode_seconds / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    models_dir = Path(os.environ.get("GGUF_RUNTIME_MODELS", "models"))
    parser.add_argument("--models", nargs="+", default=["SmolLM2-135M-Instruct.Q4_1.gguf",
                                                         "Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf"])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    timer = ConstraintTimer()
    for model in args.models:
        llm = LLM(model if os.sep in model else models_dir / model, n_ctx=1024, n_threads=args.threads)
        prompt = llm.render_chat([{"role": "user", "content": PROMPT}])
        free = SamplingParams(temperature=0, max_tokens=args.tokens, ignore_eos=True)
        constrained = SamplingParams(temperature=0, max_tokens=args.tokens,
                                     structured_outputs=StructuredOutputsParams(json=SCHEMA))
        decode_ms_per_token(llm, prompt, free)  # warm-up: kernels, the grammar vocabulary, the prefix cache
        decode_ms_per_token(llm, prompt, constrained)
        plain, masked = [], []
        timer.seconds, timer.calls = 0.0, 0
        for _ in range(args.repeat):
            plain.append(decode_ms_per_token(llm, prompt, free))
            masked.append(decode_ms_per_token(llm, prompt, constrained))
        p, m = statistics.median(plain), statistics.median(masked)
        per_token = 1e3 * timer.seconds / max(timer.calls, 1)
        print(f"{Path(model).name}: vocab {llm.tokenizer.n_vocab}, {args.tokens} tokens x {args.repeat}, "
              f"threads {args.threads or 'all'}")
        print(f"  unconstrained {p:7.2f} ms/token | JSON schema {m:7.2f} ms/token | ratio {m / p:.3f} | "
              f"constraint itself {per_token:.3f} ms/token ({100 * per_token / p:.1f} % of a decode step)")


if __name__ == "__main__":
    main()
