"""Compare grammar engines for structured output: compile time and per-token mask time on our vocabularies.

    python scripts/bench_grammar_engines.py [--models SmolLM2-135M-Instruct.Q4_1.gguf ...] [--repeat 3]

For each model's vocabulary (token bytes read from its GGUF, as the runtime builds them) and each installed
engine (llguidance, xgrammar, outlines-core), it reports:
  - vocab: building the engine's tokenizer object from the 49k / 152k token byte strings (once per model);
  - compile: turning a nested JSON schema into a matcher (what each request pays before its first token);
  - mask: computing the allowed-token mask at each step while walking a fixed valid document token by token,
    the first step and the median, mean and p95 over all steps (each step also consumes the document's next token, which is checked to be
    allowed: an engine that refuses the canonical tokenization of a valid document is reported as such).
The time to apply a mask to logits (bitmask -> -inf) is ours and the same for every engine, so it is excluded.

Only llguidance and outlines-core install without PyTorch; xgrammar imports torch at module load, so measuring
it needs an environment with (CPU) torch: run this script there with PYTHONPATH pointing at the repository.
Times are wall-clock on whatever machine runs it; on a shared machine they are noisy: repeat and compare ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gguf_runtime.gguf_file import GGUFFile  # noqa: E402
from gguf_runtime.tokenizer import Tokenizer  # noqa: E402

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "role": {"enum": ["admin", "user", "guest"]},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
            "required": ["city", "zip"], "additionalProperties": False,
        },
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
        "scores": {"type": "array", "items": {
            "type": "object",
            "properties": {"subject": {"enum": ["math", "art"]}, "value": {"type": "number"}},
            "required": ["subject", "value"], "additionalProperties": False}},
    },
    "required": ["name", "age", "role", "address", "tags", "scores"],
    "additionalProperties": False,
}
DOCUMENT = json.dumps({
    "name": "Ada Lovelace", "age": 36, "role": "admin", "address": {"city": "London", "zip": "12345"},
    "tags": ["math", "poetry", "engines"], "scores": [{"subject": "math", "value": 9.5}, {"subject": "art", "value": 7}],
}, separators=(",", ":"))


def load_tokenizer(path: Path) -> Tokenizer:
    return Tokenizer.from_metadata(GGUFFile(path).metadata)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


# ---- engines: each returns (vocab_object, seconds) / (matcher_factory) with a common walk ---------------------

def llguidance_engine(tok: Tokenizer):
    import llguidance
    from llguidance import LLMatcher, LLTokenizer, TokenizerWrapper

    class Vocabulary:  # what llguidance's TokenizerWrapper reads
        def __init__(self):
            self.eos_token_id = tok.eos_id
            self.bos_token_id = tok.bos_id
            self.tokens = [(b"\xff" if tok.is_special(i) else b"") + tok.token_bytes(i) for i in range(tok.n_vocab)]
            self.special_token_ids = [i for i in range(tok.n_vocab) if tok.is_special(i)]

        def __call__(self, text: bytes) -> list[int]:  # llguidance passes UTF-8 bytes
            return tok.encode(text.decode("utf-8", "replace"), add_special=False)

    lltok, vocab_s = timed(lambda: LLTokenizer(TokenizerWrapper(Vocabulary())))
    words = (tok.n_vocab + 31) // 32

    def compile_():
        m = LLMatcher(lltok, LLMatcher.grammar_from_json_schema(json.dumps(SCHEMA)), log_level=0)
        if m.is_error():
            raise RuntimeError(m.get_error())
        return m

    def step(m, mask):
        m.unsafe_compute_mask_ptr(mask.ctypes.data, mask.nbytes)

    def allowed(mask, token):
        return bool((mask[token >> 5] >> (token & 31)) & 1)

    def accept(m, token):
        if not m.consume_token(token):
            raise RuntimeError(m.get_error())

    return f"llguidance {llguidance.__version__}", vocab_s, compile_, lambda: np.zeros(words, np.int32), step, \
        allowed, accept


def xgrammar_engine(tok: Tokenizer):
    import importlib.metadata

    import xgrammar as xgr

    vocab = [tok.token_bytes(i) for i in range(tok.n_vocab)]
    info, vocab_s = timed(lambda: xgr.TokenizerInfo(vocab, vocab_type=xgr.VocabType.RAW, vocab_size=tok.n_vocab,
                                                     stop_token_ids=sorted(tok.eog_ids)))
    compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)

    def compile_():
        return xgr.GrammarMatcher(compiler.compile_json_schema(json.dumps(SCHEMA), any_whitespace=True))

    def step(m, mask):
        m.fill_next_token_bitmask(mask)

    def allowed(mask, token):
        return bool((int(mask[0, token >> 5]) >> (token & 31)) & 1)

    def accept(m, token):
        if not m.accept_token(token):
            raise RuntimeError("token refused")

    return f"xgrammar {importlib.metadata.version('xgrammar')}", vocab_s, compile_, lambda: xgr.allocate_token_bitmask(1, tok.n_vocab), \
        step, allowed, accept


def outlines_engine(tok: Tokenizer):
    import importlib.metadata

    from outlines_core import Guide, Index, Vocabulary
    from outlines_core.json_schema import build_regex_from_schema

    def build():
        by_bytes: dict[bytes, list[int]] = {}
        eos = tok.eos_id
        for i in range(tok.n_vocab):
            if i != eos and not tok.is_special(i):
                by_bytes.setdefault(tok.token_bytes(i), []).append(i)
        by_bytes.pop(b"", None)
        return Vocabulary(eos, by_bytes)

    vocab, vocab_s = timed(build)
    words = (tok.n_vocab + 31) // 32

    def compile_():
        return Guide(Index(build_regex_from_schema(json.dumps(SCHEMA)), vocab))

    def step(m, mask):
        m.write_mask_into(mask.ctypes.data, mask.size, mask.itemsize)

    def allowed(mask, token):
        return bool((mask[token >> 5] >> (token & 31)) & 1)

    def accept(m, token):
        m.advance(token)

    return f"outlines-core {importlib.metadata.version('outlines-core')}", vocab_s, compile_, \
        lambda: np.zeros(words, np.int32), step, allowed, accept


ENGINES = {"llguidance": llguidance_engine, "xgrammar": xgrammar_engine, "outlines-core": outlines_engine}


def measure(name: str, tok: Tokenizer, repeat: int) -> dict:
    try:
        label, vocab_s, compile_, new_mask, step, allowed, accept = ENGINES[name](tok)
    except ImportError as e:
        return {"engine": name, "error": f"not installed ({e})"}
    document = tok.encode(DOCUMENT, add_special=False)
    compile_times, mask_times = [], []
    for _ in range(repeat):
        matcher, seconds = timed(compile_)
        compile_times.append(seconds)
        mask = new_mask()
        for token in document:
            t0 = time.perf_counter()
            step(matcher, mask)
            mask_times.append(time.perf_counter() - t0)
            if not allowed(mask, token):
                return {"engine": label, "error": f"refused the document's token {token} "
                                                  f"({tok.token_bytes(token)!r})"}
            accept(matcher, token)
    first = 1e6 * statistics.median(mask_times[::len(document)])
    mask_times.sort()
    return {"engine": label, "vocab_s": vocab_s, "compile_ms": 1e3 * statistics.median(compile_times),
            "mask_first_us": first, "mask_median_us": 1e6 * statistics.median(mask_times),
            "mask_mean_us": 1e6 * statistics.fmean(mask_times),
            "mask_p95_us": 1e6 * mask_times[int(0.95 * (len(mask_times) - 1))], "steps": len(document)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    models_dir = Path(os.environ.get("GGUF_RUNTIME_MODELS", "models"))
    parser.add_argument("--models", nargs="+", default=["SmolLM2-135M-Instruct.Q4_1.gguf",
                                                         "Qwen2.5-Coder-0.5B-Instruct.gguf"])
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for model in args.models:
        path = Path(model) if os.sep in model else models_dir / model
        tok = load_tokenizer(path)
        print(f"{path.name}: {tok.n_vocab} tokens; document {len(tok.encode(DOCUMENT, add_special=False))} tokens")
        for name in args.engines:
            r = measure(name, tok, args.repeat)
            if "error" in r:
                print(f"  {r['engine']:<22} {r['error']}")
            else:
                print(f"  {r['engine']:<22} vocab {r['vocab_s']:6.2f} s | compile {r['compile_ms']:8.1f} ms | "
                      f"mask first {r['mask_first_us']:7.1f} us, median {r['mask_median_us']:7.1f} us, "
                      f"mean {r['mask_mean_us']:7.1f} us, p95 {r['mask_p95_us']:7.1f} us "
                      f"({r['steps']} steps x {args.repeat})")


if __name__ == "__main__":
    main()
