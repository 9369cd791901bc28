"""Chat templates: the real models' templates render exactly like the references stored by
scripts/fixtures_chat.py, hostile templates never execute, and errors are one clear line."""

from __future__ import annotations

import functools
import hashlib
import json
from datetime import datetime
from pathlib import Path

import pytest

from gguf_runtime.chat_template import CHATML_TEMPLATE, ChatTemplate, ChatTemplateError
from gguf_runtime.gguf_file import GGUFFile

CHAT_FIXTURES = Path(__file__).parent / "fixtures" / "chat"
PATH_FIXTURE = {  # catalog model -> its conftest path fixture
    "smollm2-135m": "smollm2_path",
    "qwen2.5-coder-0.5b": "qwen05_path",
    "qwen2.5-coder-1.5b": "qwen15_path",
    "gemma-3-270m": "gemma_path",
}
FIXTURE_NAMES = ["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "gemma-3-270m", "gemma3-it"]

USER = [{"role": "user", "content": "Hi"}]


@functools.cache
def _metadata(path: Path) -> dict:
    return GGUFFile(path).metadata  # kept open for the session: numeric arrays are views of its mmap


def load_fixture(name: str) -> dict:
    return json.loads((CHAT_FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def template_for(fixture: dict, request) -> ChatTemplate:
    """Our template for a fixture: from the model's GGUF metadata, or a stored template text with the model's
    special tokens (the gemma-3-270m GGUF is the base model and carries no template)."""
    metadata = _metadata(request.getfixturevalue(PATH_FIXTURE[fixture["model"]]))
    tokens = metadata["tokenizer.ggml.tokens"]
    if fixture["template_file"] is None:
        return ChatTemplate.from_metadata(metadata, tokens.__getitem__)
    source = (CHAT_FIXTURES / fixture["template_file"]).read_text(encoding="utf-8")
    return ChatTemplate(source, tokens[metadata["tokenizer.ggml.bos_token_id"]],
                        tokens[metadata["tokenizer.ggml.eos_token_id"]])


# --- real templates against the references --------------------------------------------------------------------

@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_real_template_renders_match_reference(name, request):
    fixture = load_fixture(name)
    template = template_for(fixture, request)
    assert template.is_fallback == fixture["fallback"]
    assert (template.bos_token, template.eos_token) == (fixture["bos_token"], fixture["eos_token"])
    if not template.is_fallback:  # the fixtures were made from this exact template text
        assert hashlib.sha256(template.source.encode()).hexdigest() == fixture["template_sha256"]
    assert len(fixture["cases"]) >= 3
    for case in fixture["cases"]:
        rendered = template.render(case["messages"], case["add_generation_prompt"], **case["extra"])
        assert rendered == case["expected"], case["name"]


def test_fallback_is_llama_cpp_chatml(request):
    metadata = _metadata(request.getfixturevalue("gemma_path"))
    assert "tokenizer.chat_template" not in metadata
    template = ChatTemplate.from_metadata(metadata, metadata["tokenizer.ggml.tokens"].__getitem__)
    assert template.is_fallback and template.source == CHATML_TEMPLATE
    assert template.render(USER) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert template.render(USER, add_generation_prompt=False) == "<|im_start|>user\nHi<|im_end|>\n"


def test_qwen_inserts_its_default_system_prompt(request):
    metadata = _metadata(request.getfixturevalue("qwen05_path"))
    template = ChatTemplate.from_metadata(metadata, metadata["tokenizer.ggml.tokens"].__getitem__)
    assert template.render(USER).startswith(
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n")
    assert template.bos_token == "<|endoftext|>" and template.eos_token == "<|im_end|>"


def test_strip_bos_and_eos_like_llama_cpp():
    source = (CHAT_FIXTURES / "gemma3-it.chat_template.jinja").read_text(encoding="utf-8")
    gemma = ChatTemplate(source, "<bos>", "<eos>")
    assert gemma.render(USER).startswith("<bos><start_of_turn>user")
    assert gemma.render(USER, strip_bos=True) == "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    wrapped = ChatTemplate("{{ bos_token }}{{ messages[0].content }}{{ eos_token }}", "<s>", "</s>")
    assert wrapped.render(USER, strip_bos=True, strip_eos=True) == "Hi"
    assert ChatTemplate("x{{ messages[0].content }}").render(USER, strip_bos=True, strip_eos=True) == "xHi"


def test_gemma_template_raise_exception_becomes_chat_template_error():
    source = (CHAT_FIXTURES / "gemma3-it.chat_template.jinja").read_text(encoding="utf-8")
    with pytest.raises(ChatTemplateError, match="rejected the messages: Conversation roles must alternate"):
        ChatTemplate(source, "<bos>").render(USER + USER)


# --- metadata handling ----------------------------------------------------------------------------------------

def test_from_metadata_named_variants_and_special_tokens():
    metadata = {"tokenizer.chat_template": "{{ bos_token }}default{{ eos_token }}",
                "tokenizer.chat_template.tool_use": "tools:{{ tools | tojson }}",
                "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2}
    vocab = ["<unk>", "<s>", "</s>"]
    assert ChatTemplate.variant_names(metadata) == ["tool_use"]
    assert ChatTemplate.from_metadata(metadata, vocab.__getitem__).render(USER) == "<s>default</s>"
    tool_use = ChatTemplate.from_metadata(metadata, vocab.__getitem__, name="tool_use")
    assert tool_use.name == "tool_use" and tool_use.render(USER, tools=[{"a": 1}]) == 'tools:[{"a": 1}]'
    with pytest.raises(ChatTemplateError, match="no chat template named 'rag'; available: tool_use"):
        ChatTemplate.from_metadata(metadata, vocab.__getitem__, name="rag")


def test_from_metadata_without_template_or_specials():
    template = ChatTemplate.from_metadata({}, lambda i: pytest.fail("no token ids to look up"))
    assert template.is_fallback and template.bos_token == "" and template.eos_token == ""


# --- transformers-compatible environment ----------------------------------------------------------------------

def test_trim_and_lstrip_blocks_like_transformers():
    source = "{% for m in messages %}\n    {% if true %}\n[{{ m.content }}]\n    {% endif %}\n{% endfor %}"
    assert ChatTemplate(source).render(USER + USER) == "[Hi]\n[Hi]\n"


def test_tojson_is_plain_json_with_options():
    template = ChatTemplate("{{ x | tojson }}|{{ x | tojson(indent=2) }}|{{ y | tojson(sort_keys=true) }}")
    out = template.render(USER, x={"k": "<é&'>"}, y={"b": 1, "a": 2})
    assert out == '{"k": "<é&\'>"}|{\n  "k": "<é&\'>"\n}|{"a": 2, "b": 1}'


def test_strftime_now_loopcontrols_generation_and_context_defaults():
    source = ("{{ strftime_now('%Y') }}|{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}"
              "{{ m.content }}{% endfor %}|{% generation %}gen{% endgeneration %}|{{ tools is none }}"
              "|{{ documents is none }}|{{ bos_token }}{{ eos_token }}|{{ add_generation_prompt }}")
    out = ChatTemplate(source, "<s>", "</s>").render(USER * 3)
    assert out == f"{datetime.now():%Y}|Hi|gen|True|True|<s></s>|True"


def test_extra_variables_reach_the_template():
    assert ChatTemplate("{{ enable_thinking }}-{{ bos_token }}", "<s>").render(
        USER, enable_thinking=False, bos_token="B") == "False-B"


def test_multimodal_content_parts_accepted():
    source = "{% for p in messages[0].content %}{{ p.type }}:{{ p.text }}{% endfor %}"
    parts = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    assert ChatTemplate(source).render(parts) == "text:atext:b"


# --- the sandbox ----------------------------------------------------------------------------------------------

# Templates that would leave MARKER behind if they ever reached Python.
HOSTILE = [
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "sandbox"),
    ("{{ ''.__class__ }}", "sandbox: access to attribute '__class__' of 'str' object is unsafe"),
    ("{{ cycler.__init__.__globals__.os.system('touch MARKER') }}", "sandbox"),
    ("{{ joiner.__init__.__globals__.os.popen('touch MARKER').read() }}", "sandbox"),
    ("{{ lipsum.__globals__['os'].system('touch MARKER') }}", "sandbox"),
    ("{{ self.__init__.__globals__ }}", "sandbox"),
    ("{{ namespace.__init__.__globals__ }}", "sandbox"),
    ("{{ '{0.__class__}'.format('') }}", "sandbox"),
    ("{{ raise_exception.__globals__ }}", "sandbox"),
    ("{{ strftime_now.__globals__['datetime'] }}", "sandbox"),
    ("{% include '/etc/passwd' %}", "no loader"),
    ("{% import 'os' as os %}", "no loader"),
    ("{% extends '/etc/passwd' %}", "no loader"),
    ("{{ open('MARKER', 'w').write('x') }}", "'open' is undefined"),
    ("{{ __import__('os').system('touch MARKER') }}", "is undefined"),
    ("{% set x = messages.append(1) %}", "access to attribute 'append' of 'list' object is unsafe"),
    ("{{ messages.pop() }}", "access to attribute 'pop' of 'list' object is unsafe"),
    ("{{ messages[0].update({'role': 'system'}) }}", "access to attribute 'update' of 'dict' object is unsafe"),
    ("{{ messages[0].__setitem__('role', 'x') }}", "sandbox"),
    ("{% set m = messages[0] %}{% set m.role = 'system' %}", "non-namespace object"),
    ("{{ 'a' * 100000000 }}", "'*' would build a sequence longer than"),
    ("{{ [0] * 100000000 }}", "'*' would build a sequence longer than"),
    ("{{ 10 ** 100000000 }}", "'**' with an exponent above"),
    ("{% for i in range(100000000) %}{% endfor %}", "MAX_RANGE"),
]


@pytest.mark.parametrize("source, message", HOSTILE)
def test_hostile_templates_never_execute(source, message, tmp_path):
    marker = tmp_path / "pwned"
    messages = [{"role": "user", "content": "Hi"}]
    with pytest.raises(ChatTemplateError) as err:
        ChatTemplate(source.replace("MARKER", str(marker))).render(messages)
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    assert not marker.exists()
    assert messages == [{"role": "user", "content": "Hi"}]  # untouched


def test_syntax_error_is_one_line_with_line_number():
    with pytest.raises(ChatTemplateError, match=r"^chat template syntax error at line 2: ") as err:
        ChatTemplate("ok\n{% for %}\n")
    assert "\n" not in str(err.value)


def test_undefined_attribute_use_is_an_error():
    with pytest.raises(ChatTemplateError, match=r"chat template failed \(UndefinedError\): 'x' is undefined"):
        ChatTemplate("{{ x.y }}").render(USER)


def test_long_messages_are_fine():
    assert len(ChatTemplate(None).render([{"role": "user", "content": "a" * 200_000}])) > 200_000


# --- message validation ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("messages, message", [
    ("hello", "messages must be a list of {'role': ..., 'content': ...} dicts, got str"),
    (["hello"], "messages[0] must be a dict with 'role' and 'content', got str"),
    ([{"content": "x"}], "messages[0]['role'] must be a non-empty string, got None"),
    ([{"role": "", "content": "x"}], "messages[0]['role'] must be a non-empty string, got ''"),
    ([{"role": "user", "content": "x"}, {"role": "assistant"}], "messages[1] (assistant) has no 'content'"),
    ([{"role": "user", "content": 5}], "messages[0]['content'] must be a string or a list of content parts"),
    ([{"role": "assistant", "content": None}], "(None only beside tool_calls), got NoneType"),
    ([{"role": "user", "content": ["x"]}], "messages[0]['content'][0] must be a dict with a 'type'"),
])
def test_message_validation(messages, message):
    with pytest.raises(ChatTemplateError) as err:
        ChatTemplate(None).render(messages)
    assert message in str(err.value)


def test_assistant_tool_call_without_content_is_valid():
    messages = [{"role": "assistant", "content": None, "tool_calls": [{"name": "f", "arguments": {}}]}]
    assert ChatTemplate("{{ messages[0].tool_calls[0].name }}").render(messages) == "f"
