"""Reference renders of the real models' chat templates -> tests/fixtures/chat/<name>.json.

Run with the llama-cpp-python interpreter (it must have `transformers` too; torch is not needed):

    /work/llvenv/bin/python scripts/fixtures_chat.py [--out DIR] [NAME ...]

Two independent references, neither of them our code:
  * transformers' ``render_jinja_template`` (the Jinja semantics HF templates are written for) gives
    ``expected``: the string our renderer must reproduce exactly.
  * llama.cpp's built-in template engine (``llama_chat_apply_template``: it recognises chatml, gemma, ... from
    the template text and formats with hand-written C++) gives ``llama_cpp_builtin``. It ignores whatever the
    Jinja does beyond the basic turn format (default system prompts, ``bos_token``, tools), so where it disagrees
    the case records ``builtin_agrees: false`` and the fixture's ``notes`` say why.
Template text and special tokens are read by llama.cpp (a vocab-only model load), not by our GGUF reader.

Models with no template in their GGUF (our gemma-3-270m is the base model) get llama.cpp's ChatML fallback; its
expected strings come from llama.cpp's built-in chatml formatter. The Gemma 3 instruction template is rendered
from tests/fixtures/chat/gemma3-it.chat_template.jinja (google/gemma-3-*-it tokenizer_config.json) with the
gemma-3-270m vocabulary's <bos>/<eos>.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gguf_runtime.catalog import model_path  # noqa: E402  (stdlib-only: safe under the llama.cpp interpreter)

DEFAULT_OUT = REPO / "tests" / "fixtures" / "chat"

SYSTEM = {"role": "system", "content": "You are a terse assistant. Answer in one line."}
USER_1 = {"role": "user", "content": "What is the capital of France?"}
ASSISTANT_1 = {"role": "assistant", "content": "Paris."}
USER_2 = {"role": "user", "content": "  And of Japan? (réponse en français, s'il vous plaît)\n"}
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "e.g. Zürich"}},
                   "required": ["city"]}}}

CASES = [  # (name, messages, add_generation_prompt, extra template variables)
    ("system_user_assistant", [SYSTEM, USER_1, ASSISTANT_1], True, {}),
    ("user_assistant", [USER_1, ASSISTANT_1], True, {}),
    ("multi_turn", [SYSTEM, USER_1, ASSISTANT_1, USER_2], True, {}),
    ("no_generation_prompt", [USER_1, ASSISTANT_1], False, {}),
]
TOOLS_CASE = ("tools", [USER_1], True, {"tools": [WEATHER_TOOL]})

# name -> (catalog model, template file under tests/fixtures/chat or None for the GGUF's own)
TARGETS = {
    "smollm2-135m": ("smollm2-135m", None),
    "qwen2.5-coder-0.5b": ("qwen2.5-coder-0.5b", None),
    "qwen2.5-coder-1.5b": ("qwen2.5-coder-1.5b", None),
    "gemma-3-270m": ("gemma-3-270m", None),
    "gemma3-it": ("gemma-3-270m", "gemma3-it.chat_template.jinja"),
}


def load_vocab_only(path: Path):
    import llama_cpp

    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise SystemExit(f"llama.cpp could not load {path}")
    return model


def token_text(model, token_id: int) -> str:
    import llama_cpp

    return llama_cpp.llama_vocab_get_text(llama_cpp.llama_model_get_vocab(model), token_id).decode("utf-8")


def llama_builtin_render(template: str, messages: list[dict], add_generation_prompt: bool) -> str | None:
    """llama.cpp's hand-written formatter for the template family it detects; None if it detects none."""
    import llama_cpp

    chat = (llama_cpp.llama_chat_message * len(messages))()
    keep = []  # the C structs point into these buffers
    for slot, message in zip(chat, messages):
        role, content = ctypes.create_string_buffer(message["role"].encode()), \
            ctypes.create_string_buffer(message["content"].encode())
        keep += [role, content]
        slot.role, slot.content = ctypes.cast(role, ctypes.c_char_p), ctypes.cast(content, ctypes.c_char_p)
    size = 4096
    while True:
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_chat_apply_template(template.encode(), chat, len(messages), add_generation_prompt,
                                                buf, size)
        if n < 0:
            return None
        if n <= size:
            return buf.raw[:n].decode("utf-8")
        size = n


def transformers_render(template: str, messages: list[dict], add_generation_prompt: bool, bos: str, eos: str,
                        extra: dict) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    extra = dict(extra)
    tools = extra.pop("tools", None)
    rendered, _ = render_jinja_template(conversations=[messages], tools=tools, chat_template=template,
                                        add_generation_prompt=add_generation_prompt, bos_token=bos,
                                        eos_token=eos, **extra)
    return rendered[0]


def build(name: str) -> dict:
    import llama_cpp
    import transformers

    model_name, template_file = TARGETS[name]
    model = load_vocab_only(model_path(model_name))
    vocab = llama_cpp.llama_model_get_vocab(model)
    bos, eos = token_text(model, llama_cpp.llama_vocab_bos(vocab)), token_text(model, llama_cpp.llama_vocab_eos(vocab))
    gguf_template = llama_cpp.llama_model_chat_template(model, None)
    if template_file is not None:
        template = (DEFAULT_OUT / template_file).read_text(encoding="utf-8")
    else:
        template = gguf_template.decode("utf-8") if gguf_template else None
    fallback = template is None
    notes = []
    cases = []
    case_list = CASES + ([TOOLS_CASE] if template and "tools" in template else [])
    for case_name, messages, add_gen, extra in case_list:
        builtin = None if extra else llama_builtin_render(template or "chatml", messages, add_gen)
        if fallback:
            expected = builtin
        else:
            expected = transformers_render(template, messages, add_gen, bos, eos, extra)
        if expected is None:
            raise SystemExit(f"{name}/{case_name}: no reference could render it")
        cases.append({"name": case_name, "messages": messages, "add_generation_prompt": add_gen, "extra": extra,
                      "expected": expected, "llama_cpp_builtin": builtin,
                      "builtin_agrees": None if builtin is None else builtin == expected})
    disagreeing = [c["name"] for c in cases if c["builtin_agrees"] is False]
    if disagreeing:
        notes.append(f"llama.cpp's built-in formatter differs from the Jinja template in: "
                     f"{', '.join(disagreeing)} (see each case's llama_cpp_builtin)")
    if fallback:
        notes.append("the GGUF has no tokenizer.chat_template: llama.cpp falls back to chatml; expected = its "
                     "built-in chatml formatter")
    llama_cpp.llama_model_free(model)
    return {
        "model": model_name,
        "template_file": template_file,
        "fallback": fallback,
        "template_sha256": None if fallback else hashlib.sha256(template.encode()).hexdigest(),
        "bos_token": bos,
        "eos_token": eos,
        "references": {"expected": "llama.cpp built-in chatml" if fallback else
                       f"transformers {transformers.__version__} render_jinja_template",
                       "llama_cpp_builtin": f"llama-cpp-python {llama_cpp.__version__} llama_chat_apply_template"},
        "notes": notes,
        "cases": cases,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"fixtures to build (default: all of {', '.join(TARGETS)})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in TARGETS]
    if unknown:
        parser.error(f"unknown fixture(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.names or TARGETS:
        fixture = build(name)
        path = args.out / f"{name}.json"
        path.write_text(json.dumps(fixture, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"{path}: {len(fixture['cases'])} cases; " + ("; ".join(fixture["notes"]) or "references agree"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
