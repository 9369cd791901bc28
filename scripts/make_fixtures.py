"""Record llama.cpp's answers (through llama-cpp-python) as small JSON fixtures for the parity tests.

Run with the tools venv, never the runtime one (`make fixtures-env`, then `make fixtures`):

    /work/llvenv/bin/python scripts/make_fixtures.py tokenizer [--models smollm2-135m ...]

Each subcommand is one `add_<name>_command` function below that registers its arguments and handler.
This script imports only llama_cpp, the standard library and gguf_runtime.catalog (stdlib-only).
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gguf_runtime.catalog import CATALOG, model_path  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures"
TOKENIZER_DIR = FIXTURES / "tokenizer"
TOKENIZER_MODELS = ("smollm2-135m", "qwen2.5-coder-0.5b", "gemma-3-270m")
PIECE_BLOCK = 8192  # tokens per digest block of the vocabulary-wide piece/attribute checks
FLAG_SAMPLES = ("", "Hello world", "<|im_start|>hi<|im_end|>")  # also recorded without BOS/EOS
# Pre-tokenizers checked on SmolLM2's vocabulary with only `tokenizer.ggml.pre` changed (no real model needed).
PRE_VOCAB_MODEL = "smollm2-135m"
PRE_NAMES = ("default", "gpt-2", "llama-bpe", "dbrx", "qwen2", "stablelm2", "starcoder", "falcon", "deepseek-llm",
             "deepseek-coder", "deepseek-v3", "poro-chat", "bloom", "viking", "trillion", "tekken", "gpt-4o")


def load_llama_vocab(path: Path):
    """A vocab-only llama.cpp model and its vocab handle."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    return llama_cpp, llm, llama_cpp.llama_model_get_vocab(llm.model)


# -- tokenizer -------------------------------------------------------------------------------------------------


def add_tokenizer_command(subparsers) -> None:
    parser = subparsers.add_parser("tokenizer", help="token ids and detokenized text for the corpus")
    parser.add_argument("--models", nargs="+", default=list(TOKENIZER_MODELS), choices=sorted(CATALOG))
    parser.add_argument("--corpus", type=Path, default=TOKENIZER_DIR / "corpus.json")
    parser.add_argument("--out", type=Path, default=TOKENIZER_DIR)
    parser.set_defaults(handler=make_tokenizer_fixtures)


def make_tokenizer_fixtures(args) -> None:
    corpus = json.loads(args.corpus.read_text(encoding="utf-8"))
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        fixture = tokenizer_fixture(model_path(name), corpus)
        fixture["model"] = name
        write_json(args.out / f"{name}.json", fixture)
    write_json(args.out / "pretokenizers.json", pretokenizer_fixture(model_path(PRE_VOCAB_MODEL), corpus))


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"{path.relative_to(REPO)}: {path.stat().st_size // 1024} KiB")


def tokenizer_fixture(path: Path, corpus: list[str]) -> dict:
    lib, llm, vocab = load_llama_vocab(path)

    def tokenize(text: str, add_special: bool, parse_special: bool) -> list[int]:
        return llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=parse_special)

    cases = []
    for text in corpus:
        case = {}
        for key, parse_special in (("plain", False), ("special", True)):
            ids = tokenize(text, True, parse_special)
            case[key] = {"ids": ids, "text": _detokenize(lib, vocab, ids, True),
                         "text_skip": _detokenize(lib, vocab, ids, False)}
        cases.append(case)

    n_vocab = lib.llama_vocab_n_tokens(vocab)
    null = -1

    def optional(token: int) -> int | None:
        return None if token == null else token

    return {
        "llama_cpp_python": lib.__version__,
        "n_vocab": n_vocab,
        "bos_id": optional(lib.llama_vocab_bos(vocab)),
        "eos_id": optional(lib.llama_vocab_eos(vocab)),
        "eot_id": optional(lib.llama_vocab_eot(vocab)),
        "eog_ids": [i for i in range(n_vocab) if lib.llama_vocab_is_eog(vocab, i)],
        "add_bos": bool(lib.llama_vocab_get_add_bos(vocab)),
        "add_eos": bool(lib.llama_vocab_get_add_eos(vocab)),
        "flags": [{"text": text, "ids_plain": tokenize(text, False, False), "ids_special": tokenize(text, False, True)}
                  for text in FLAG_SAMPLES],
        "piece_digests": piece_digests(lib, vocab, n_vocab),
        "attr_digests": [_digest(json.dumps([lib.llama_vocab_get_attr(vocab, i)
                                             for i in range(start, min(start + PIECE_BLOCK, n_vocab))]).encode())
                         for start in range(0, n_vocab, PIECE_BLOCK)],
        "cases": cases,
    }


def pretokenizer_fixture(path: Path, corpus: list[str]) -> dict:
    """For each name in PRE_NAMES: ids (BOS/EOS added, no special parsing) and special-free detokenized text of
    the corpus with `path`'s vocabulary, stored only where they differ from `path`'s own pre-tokenizer."""
    def run(gguf: Path) -> list[tuple[list[int], str]]:
        lib, llm, vocab = load_llama_vocab(gguf)
        out = []
        for text in corpus:
            ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
            out.append((ids, _detokenize(lib, vocab, ids, False)))
        return out

    base = run(path)
    fields = metadata_fields(path)
    fixture = {"vocab_model": PRE_VOCAB_MODEL, "pre": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for pre in PRE_NAMES:
            gguf = Path(tmp) / f"{pre}.gguf"
            write_vocab_only_gguf(fields, gguf, {"tokenizer.ggml.pre": pre})
            results = run(gguf)
            fixture["pre"][pre] = {
                "ids": {i: ids for i, ((ids, _), (base_ids, _)) in enumerate(zip(results, base)) if ids != base_ids},
                "text_skip": {i: text for i, ((_, text), (_, base_text)) in enumerate(zip(results, base))
                              if text != base_text},
            }
    return fixture


def metadata_fields(source: Path) -> list[tuple]:
    """(key, value, value type, array element type) for every metadata entry of a GGUF file."""
    from gguf import GGUFReader, GGUFValueType

    fields = []
    for name, field in GGUFReader(source).fields.items():
        if not name.startswith("GGUF."):
            value_type = field.types[0]
            sub_type = field.types[-1] if value_type == GGUFValueType.ARRAY else None
            fields.append((name, field.contents(), value_type, sub_type))
    return fields


def write_vocab_only_gguf(fields: list[tuple], dest: Path, overrides: dict[str, str]) -> None:
    """A GGUF with the given metadata (values replaced per `overrides`) and no tensors."""
    from gguf import GGUFWriter

    arch = next(value for name, value, _, _ in fields if name == "general.architecture")
    writer = GGUFWriter(dest, arch)
    for name, value, value_type, sub_type in fields:
        if name != "general.architecture":  # the writer adds it
            writer.add_key_value(name, overrides.get(name, value), value_type, sub_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()


def piece_digests(lib, vocab, n_vocab: int) -> dict[str, list[str]]:
    """sha256 per block of PIECE_BLOCK tokens over their length-prefixed pieces, for special=True and False."""
    buf = ctypes.create_string_buffer(1024)

    def piece(token: int, special: bool) -> bytes:
        n = lib.llama_token_to_piece(vocab, token, buf, len(buf), 0, special)
        if n < 0:
            raise RuntimeError(f"piece of token {token} longer than {len(buf)} bytes")
        return buf.raw[:n]

    return {
        key: [_digest(b"".join(len(p).to_bytes(4, "little") + p
                               for p in (piece(i, special) for i in range(start, min(start + PIECE_BLOCK, n_vocab)))))
              for start in range(0, n_vocab, PIECE_BLOCK)]
        for key, special in (("special", True), ("plain", False))
    }


def _detokenize(lib, vocab, ids: list[int], unparse_special: bool) -> str:
    """llama_detokenize (BOS/EOS kept), control tokens shown only with `unparse_special`."""
    arr = (lib.llama_token * max(1, len(ids)))(*ids)
    size = 256
    while True:  # llama_detokenize returns -needed when the buffer is too small
        buf = ctypes.create_string_buffer(size)
        n = lib.llama_detokenize(vocab, arr, len(ids), buf, size, False, unparse_special)
        if n >= 0:
            return buf.raw[:n].decode("utf-8", "replace")
        size = -n


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def add_delegated_command(subparsers, name: str, module: str, help_text: str) -> None:
    """A subcommand implemented by scripts/<module>.py's main(argv)."""
    parser = subparsers.add_parser(name, help=help_text, add_help=False)
    parser.add_argument("rest", nargs=argparse.REMAINDER)

    def run(args) -> None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        __import__(module).main(args.rest)

    parser.set_defaults(handler=run)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_tokenizer_command(subparsers)
    add_delegated_command(subparsers, "forward", "fixtures_forward",
                          "logits, greedy continuations and perplexity (forward-pass parity)")
    add_delegated_command(subparsers, "archs", "fixtures_archs",
                          "logits and greedy tokens of every architecture's tiny random model")
    add_delegated_command(subparsers, "chat", "fixtures_chat", "chat-template renders (needs transformers)")
    args = parser.parse_args(argv)
    args.handler(args)


if __name__ == "__main__":
    main()
