"""Reasoning and tool-call parsing, request-field translation and StructuredOutputsParams checks (no model)."""

from __future__ import annotations

import json

import pytest

from gguf_runtime import GuidedDecodingParams, SamplingParams, StructuredOutputsParams
from gguf_runtime.errors import StructuredOutputError
from gguf_runtime.structured.chat_output import ChatOutputParser, parse_chat_output
from gguf_runtime.structured.reasoning import starts_in_reasoning
from gguf_runtime.structured.requests import structured_outputs_from_request, tool_call_constraint
from gguf_runtime.structured.tool_calls import forced_call_grammar, tool_call_format

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Current weather",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}


def streamed(text: str, chunk: int, **kwargs) -> tuple[dict, list[dict]]:
    """Feed `text` in pieces of `chunk` characters; the final message and every non-empty delta."""
    parser = ChatOutputParser(**kwargs)
    deltas = [parser.feed(text[i:i + chunk]) for i in range(0, len(text), chunk)] + [parser.finish()]
    return parser.message(), [d.to_openai() for d in deltas if d]


def joined(deltas: list[dict], key: str) -> str:
    return "".join(d.get(key, "") for d in deltas)


def without_ids(message: dict) -> dict:
    for call in message.get("tool_calls", []):
        assert call.pop("id").startswith("call_")
    return message


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1000])
def test_hermes_calls_stream_in_any_pieces(chunk):
    text = ('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>')
    message, deltas = streamed(text, chunk, tool_format="hermes")
    assert without_ids(message) == {"role": "assistant", "content": "Let me check.", "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]}
    calls = [c for d in deltas for c in d.get("tool_calls", [])]
    assert [c["index"] for c in calls] == [0, 1]
    assert joined(deltas, "content") == "Let me check."
    assert "<tool" not in joined(deltas, "content")


@pytest.mark.parametrize("chunk", [1, 4, 1000])
def test_thinking_then_answer(chunk):
    text = "<think>\nThe user wants a greeting.\n</think>\n\nHello there!"
    message, deltas = streamed(text, chunk, reasoning=True)
    assert message == {"role": "assistant", "content": "Hello there!",
                       "reasoning_content": "The user wants a greeting."}
    assert joined(deltas, "reasoning_content") == "The user wants a greeting."
    assert joined(deltas, "content") == "Hello there!"


def test_prompt_opened_think_block_and_cut_off_thinking():
    assert starts_in_reasoning("<|im_start|>assistant\n<think>\n")
    assert not starts_in_reasoning("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    message, _ = streamed("step one\n</think>\nAnswer", 2, reasoning=True, in_reasoning=True)
    assert (message["reasoning_content"], message["content"]) == ("step one", "Answer")
    message, _ = streamed("<think>\nstill thinking wh", 3, reasoning=True)  # max_tokens hit mid-thought
    assert message == {"role": "assistant", "content": "", "reasoning_content": "still thinking wh"}


def test_text_that_is_not_a_think_block_or_a_call_is_content():
    for text in ("<thinking is fun>", "  <b>bold</b>", "plain"):
        assert streamed(text, 1, reasoning=True, tool_format="hermes")[0]["content"] == text
    broken = "<tool_call>\n{not json}\n</tool_call>"
    message, _ = streamed(broken, 3, tool_format="hermes")
    assert message == {"role": "assistant", "content": broken}


@pytest.mark.parametrize("chunk", [1, 9, 1000])
def test_hermes_bare_json_call_and_json_content(chunk):
    # Qwen2.5-Coder-0.5B often answers a tool prompt with the call's JSON and no <tool_call> tags
    message, deltas = streamed('{"name": "get_weather", "arguments": {"city": "Paris"}}', chunk, tool_format="hermes")
    assert message["content"] is None and message["tool_calls"][0]["function"]["name"] == "get_weather"
    assert not joined(deltas, "content")
    for text in ('{"city": "Paris"}', '{"name": "x"} and more <tool_call>{"name": "y", "arguments": {}}</tool_call>'):
        message, _ = streamed(text, chunk, tool_format="hermes")
        assert message["content"] == text.split(" <tool_call>")[0]


def test_hermes_call_without_end_tag_at_the_end_of_the_reply():
    message = parse_chat_output('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}',
                                template_source="<tool_call>", prompt="", tools=True)
    assert message["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}
    assert message["content"] is None


@pytest.mark.parametrize("chunk", [1, 5, 1000])
def test_llama3_json_calls(chunk):
    text = '{"name": "get_weather", "parameters": {"city": "Lima"}}'
    message, _ = streamed(text, chunk, tool_format="llama3_json")
    assert message["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Lima"}'}
    message, _ = streamed('<|python_tag|>{"name": "a", "parameters": {}}; {"name": "b", "parameters": {"x": 1}}',
                          chunk, tool_format="llama3_json")
    assert [c["function"]["name"] for c in message["tool_calls"]] == ["a", "b"]
    message, deltas = streamed("The weather is fine.", chunk, tool_format="llama3_json")
    assert message == {"role": "assistant", "content": "The weather is fine."}
    assert streamed('{"answer": 42}', chunk, tool_format="llama3_json")[0]["content"] == '{"answer": 42}'


@pytest.mark.parametrize("chunk", [1, 6, 1000])
def test_mistral_calls_both_generations(chunk):
    message, _ = streamed('[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Bern"}}]', chunk,
                          tool_format="mistral")
    assert message["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Bern"}'}
    message, _ = streamed('[TOOL_CALLS]get_weather[ARGS]{"city": "Bern"}[TOOL_CALLS]other[ARGS]{}', chunk,
                          tool_format="mistral")
    assert [c["function"]["name"] for c in message["tool_calls"]] == ["get_weather", "other"]


def test_format_detection_from_templates():
    assert tool_call_format("...<tool_call>\\n{...}") == "hermes"
    assert tool_call_format("{{- '[TOOL_CALLS]' }}") == "mistral"
    assert tool_call_format("<|start_header_id|>ipython ... parameters ... <|python_tag|>") == "llama3_json"
    assert tool_call_format("{{ messages }}") == "hermes"


def test_forced_call_grammar_uses_special_tokens_when_the_vocabulary_has_them():
    tools = [WEATHER]
    with_tokens = forced_call_grammar(tools, "required", "hermes", {"<tool_call>": 7, "</tool_call>": 8})
    assert "<[7]>" in with_tokens and "<[8]>" in with_tokens and '"const": "get_weather"' in with_tokens
    spelled = forced_call_grammar(tools, "get_weather", "hermes", {})
    assert '"<tool_call>"' in spelled
    assert '"parameters"' in forced_call_grammar(tools, "required", "llama3_json", {})
    assert tool_call_constraint(tools, "auto", "hermes", {}) is None
    assert tool_call_constraint(tools, {"type": "function", "function": {"name": "get_weather"}}, "hermes", {})


@pytest.mark.parametrize("tools, choice, message", [
    ("nope", None, "tools must be a list"),
    ([{"type": "function", "function": {}}], None, "name must be a non-empty string"),
    ([WEATHER, WEATHER], None, "twice"),
    ([WEATHER], "sometimes", "tool_choice must be"),
    ([WEATHER], {"type": "function", "function": {"name": "other"}}, "not among the tools"),
    ([], "required", "needs tools"),
])
def test_bad_tools_are_one_line_errors(tools, choice, message):
    with pytest.raises(StructuredOutputError, match=message):
        tool_call_constraint(tools, choice, "hermes", {})


def test_request_fields_to_params():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    assert structured_outputs_from_request({"response_format": rf}).json == schema
    assert structured_outputs_from_request({"response_format": {"type": "json_object"}}).json_object
    assert structured_outputs_from_request({"response_format": {"type": "json_object", "schema": schema}}).json == schema
    assert structured_outputs_from_request({"response_format": {"type": "text"}}) is None
    assert structured_outputs_from_request({"json_schema": schema}).json == schema
    assert structured_outputs_from_request({"grammar": 'root ::= "a"'}).grammar == 'root ::= "a"'
    assert structured_outputs_from_request({"guided_choice": ["x", "y"]}).choice == ["x", "y"]
    assert structured_outputs_from_request({"structured_outputs": {"regex": "a+"}}).regex == "a+"
    assert structured_outputs_from_request({"messages": []}) is None
    for body, message in (({"response_format": {"type": "xml"}}, "response_format type"),
                          ({"response_format": {"type": "json_schema"}}, "needs"),
                          ({"grammar": 'root ::= "a"', "json_schema": schema}, "one structured-output"),
                          ({"json_schema": "{oops"}, "not valid JSON"),
                          ({"structured_outputs": {"regexp": "a"}}, "unknown field")):
        with pytest.raises(StructuredOutputError, match=message):
            structured_outputs_from_request(body)


def test_params_shapes():
    assert SamplingParams(guided_decoding=GuidedDecodingParams(regex="[0-9]+")).structured_outputs.regex == "[0-9]+"
    assert SamplingParams(structured_outputs=StructuredOutputsParams(json='{"type": "string"}')).structured_outputs.json \
        == {"type": "string"}
    with pytest.raises(StructuredOutputError, match="exactly one"):
        StructuredOutputsParams(regex="a", choice=["a"])
    with pytest.raises(StructuredOutputError, match="exactly one"):
        StructuredOutputsParams()
    with pytest.raises(StructuredOutputError, match="backend"):
        GuidedDecodingParams(regex="a", backend="xgrammar")
    with pytest.raises(ValueError, match="not both"):
        SamplingParams(structured_outputs={"regex": "a"}, guided_decoding={"regex": "b"})
    assert json.loads(json.dumps(SamplingParams(structured_outputs={"choice": ["a"]}).structured_outputs.choice)) == ["a"]


@pytest.fixture(scope="module")
def tokenizer(smollm2_path):
    from gguf_runtime.gguf_file import GGUFFile
    from gguf_runtime.tokenizer import Tokenizer

    return Tokenizer.from_metadata(GGUFFile(smollm2_path).metadata)


def test_constraint_masks_cuts_drafts_and_forks(tokenizer):
    import numpy as np

    from gguf_runtime.structured.grammar import compile_grammar

    constraint = compile_grammar(StructuredOutputsParams(choice=["yes please", "no"]), tokenizer).constraint()
    logits = np.zeros(tokenizer.n_vocab + 3, dtype=np.float32)  # a model's rows may outnumber the vocabulary
    constraint.mask(logits)
    allowed = {tokenizer.decode([int(t)]) for t in np.flatnonzero(np.isfinite(logits))}
    assert allowed and all("yes please".startswith(a) or "no".startswith(a) for a in allowed)
    assert np.isneginf(logits[tokenizer.n_vocab:]).all()
    yes = tokenizer.encode("yes please", add_special=False)
    wrong = tokenizer.encode("yes sir", add_special=False)
    assert constraint.valid_prefix(yes) == len(yes)
    assert constraint.valid_prefix(wrong) == next(i for i, (a, b) in enumerate(zip(yes, wrong)) if a != b)
    twin = constraint.fork()
    for token in yes:
        twin.accept(token)
    assert twin.is_terminated() and not constraint.is_terminated()  # the original did not move
    end = np.zeros(tokenizer.n_vocab, dtype=np.float32)
    twin.mask(end)
    assert set(np.flatnonzero(np.isfinite(end))) <= set(tokenizer.eog_ids)
