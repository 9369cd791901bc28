"""Structured output on real models through the engine: JSON schema, regex, choice, GBNF, mixed batches, bad
input, tool calls (Qwen2.5-Coder-0.5B) and the CLI flags."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys

import jsonschema
import pytest

from gguf_runtime import SamplingParams, StructuredOutputsParams
from gguf_runtime.errors import StructuredOutputError

from test_cli_complete import assert_one_line_error, run_cli

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"enum": ["admin", "user", "guest"]},
        "address": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                                     "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                    "required": ["city", "zip"], "additionalProperties": False},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
    },
    "required": ["name", "age", "role", "address", "tags"],
    "additionalProperties": False,
}

# arithmetic in llama.cpp's GBNF, nesting bounded so every sentence fits the token budget
ARITHMETIC = r"""
root   ::= term (op term){0,3}
term   ::= number | "(" number (op number){1,2} ")"
op     ::= "+" | "-" | "*"
number ::= [1-9] [0-9]{0,2}
"""


@pytest.fixture(scope="module")
def llm(smollm2_path):
    from gguf_runtime.api import LLM

    # A pool for 16 worst-case sequences (prompt + max_tokens 160 < 256): the default (2 x n_ctx) admitted about
    # 4 of the 50 samples at a time, and the test then ran twice the forward passes.
    return LLM(smollm2_path, n_ctx=512, seed=1234, max_num_seqs=16, kv_cache_tokens=16 * 256)


def chat_prompt(llm, text: str) -> str:
    return llm.render_chat([{"role": "user", "content": text}])


def test_fifty_samples_match_a_nested_schema(llm):
    schema = StructuredOutputsParams(json=SCHEMA)
    params = [SamplingParams(temperature=1.0, max_tokens=160, seed=seed, structured_outputs=schema)
              for seed in range(50)]
    outputs = [r.outputs[0] for r in llm.generate([chat_prompt(llm, "Describe a user as JSON.")] * 50, params)]
    assert llm.batch_stats.max_running == 16  # the pool admitted a full batch
    for out in outputs:
        assert out.finish_reason == "stop", out.text
        jsonschema.validate(json.loads(out.text), SCHEMA)
    assert len({o.text for o in outputs}) > 10  # sampled, not one forced string


def test_regex_and_choice_always_match(llm):
    prompt = chat_prompt(llm, "Name a product and its price.")
    regex = r"[A-Z][a-z]{2,8} costs [1-9][0-9]{0,2} (dollars|euros)"
    params = SamplingParams(n=8, temperature=1.0, max_tokens=24, seed=3, structured_outputs={"regex": regex})
    for out in llm.generate(prompt, params)[0].outputs:
        assert out.finish_reason == "stop" and re.fullmatch(regex, out.text), out.text
    colours = ["red", "green", "blue", "dark purple"]
    params = SamplingParams(n=8, temperature=1.0, max_tokens=8, seed=4, structured_outputs={"choice": colours})
    texts = [o.text for o in llm.generate(chat_prompt(llm, "Pick a colour."), params)[0].outputs]
    assert all(t in colours for t in texts), texts


def test_gbnf_arithmetic_always_parses(llm):
    params = SamplingParams(n=8, temperature=1.0, max_tokens=48, seed=5, structured_outputs={"grammar": ARITHMETIC})
    for out in llm.generate(chat_prompt(llm, "Write a sum."), params)[0].outputs:
        assert out.finish_reason == "stop", out.text
        tree = ast.parse(out.text, mode="eval")
        assert all(isinstance(n, (ast.Expression, ast.BinOp, ast.Constant, ast.operator)) for n in ast.walk(tree))


def test_batch_of_mixed_requests_equals_each_alone(llm):
    greedy = dict(temperature=0.0, max_tokens=20)
    kinds = [{"json": SCHEMA}, {"regex": r"[a-z ]{4,30}\."}, {"choice": ["yes", "no"]}, {"grammar": ARITHMETIC},
             {"json_object": True}, None, None, None]
    prompts = [chat_prompt(llm, text) for text in ("A user as JSON.", "Say something.", "Is water wet?",
                                                   "Add numbers.", "Any JSON object.", "Hello!", "Count to five.",
                                                   "What is a cat?")]
    params = [SamplingParams(**greedy, structured_outputs=k) for k in kinds]
    together = llm.generate(prompts, params)
    for prompt, p, out in zip(prompts, params, together):
        alone = llm.generate(prompt, p)[0].outputs[0]
        assert out.outputs[0].token_ids == alone.token_ids
    assert together[2].outputs[0].text in ("yes", "no")


def test_speculative_drafts_are_held_to_the_grammar(llm, smollm2_path):
    from gguf_runtime.api import LLM

    speculative = LLM(smollm2_path, n_ctx=512, speculative="ngram", draft_max=8)
    params = SamplingParams(temperature=0.0, max_tokens=80, structured_outputs={"json": SCHEMA})
    prompt = chat_prompt(llm, "Describe a user as JSON. Then describe the same user again.")
    expected = llm.generate(prompt, params)[0].outputs[0]
    got = speculative.generate(prompt, params)[0].outputs[0]
    assert got.token_ids == expected.token_ids
    jsonschema.validate(json.loads(got.text), SCHEMA)


@pytest.mark.parametrize("kind, message", [
    ({"json": {"type": "strnig"}}, "invalid JSON schema"),
    ({"json": {"type": "object", "dependentSchemas": {"a": {}}}}, "dependentSchemas"),
    ({"regex": "[a-"}, "invalid regex"),
    ({"grammar": 'root ::= ("a"'}, "invalid grammar"),
    ({"grammar": "root ::= missing"}, "invalid grammar"),
])
def test_bad_constraints_fail_before_any_token(llm, kind, message):
    before = llm.engine.metrics()
    with pytest.raises(StructuredOutputError, match=message) as caught:
        llm.generate("Hi", SamplingParams(structured_outputs=kind))
    assert "\n" not in str(caught.value)
    after = llm.engine.metrics()
    assert not llm.engine.has_unfinished()
    assert (after.kv_blocks_used, after.generation_tokens_total) == (before.kv_blocks_used,
                                                                      before.generation_tokens_total)


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city"}},
                   "required": ["city"]}}}


@pytest.fixture(scope="module")
def qwen(qwen05_path):
    from gguf_runtime.api import LLM

    return LLM(qwen05_path, n_ctx=1024, max_num_seqs=2)


def test_qwen_calls_a_tool_and_answers_from_its_result(qwen):
    greedy = SamplingParams(temperature=0.0, max_tokens=48)
    messages = [{"role": "user", "content": "What is the weather like in Paris right now?"}]
    first = qwen.chat(messages, greedy, tools=[WEATHER])[0].outputs[0]
    assert first.finish_reason == "tool_calls" and first.content is None, first.text
    (call,) = first.tool_calls
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"])["city"].lower().startswith("paris")
    messages += [{"role": "assistant", "content": None, "tool_calls": first.tool_calls},
                 {"role": "tool", "tool_call_id": call["id"], "content": '{"temperature_c": 31, "sky": "sunny"}'}]
    second = qwen.chat(messages, greedy, tools=[WEATHER])[0].outputs[0]
    assert not second.tool_calls
    assert "31" in second.content and "sunny" in second.content.lower(), second.content


def test_required_tool_choice_forces_a_valid_call(qwen):
    params = SamplingParams(temperature=1.0, max_tokens=40, seed=11)
    messages = [{"role": "user", "content": "Tell me a joke."}]  # nothing here asks for the weather
    out = qwen.chat(messages, params, tools=[WEATHER], tool_choice="required", parallel_tool_calls=False)[0].outputs[0]
    assert len(out.tool_calls) == 1 and out.finish_reason == "tool_calls", out.text
    for call in out.tool_calls:
        assert call["function"]["name"] == "get_weather"
        jsonschema.validate(json.loads(call["function"]["arguments"]), WEATHER["function"]["parameters"])


def test_cli_choice_and_bad_schema(smollm2_path):
    result = run_cli("complete", "-m", smollm2_path, "--chat", "--choice", "yes", "--choice", "no",
                     "--temperature", "0", "Is the sky blue?")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in ("yes", "no")
    assert_one_line_error(run_cli("complete", "-m", smollm2_path, "--json-schema", '{"type": "strnig"}', "Hi"),
                          "invalid JSON schema")
    assert_one_line_error(run_cli("complete", "-m", smollm2_path, "--regex", "a", "--choice", "b", "Hi"),
                          "give one of")


def test_repl_shows_tool_calls_and_answers_a_tool_result(qwen05_path, tmp_path):
    (tmp_path / "tools.json").write_text(json.dumps([WEATHER]))
    lines = ["/tool 20 degrees", "/set think on", "/set think maybe", "What is the weather like in Paris right now?",
             '/tool {"temperature_c": 31, "sky": "sunny"}', f"/save {tmp_path / 'chat.json'}", "/bye"]
    result = subprocess.run([sys.executable, "-m", "gguf_runtime", "chat", "-m", str(qwen05_path), "--tools",
                             str(tmp_path / "tools.json"), "--temperature", "0", "-n", "48"],
                            input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "called no tool" in result.stderr and "think on" in result.stderr and "usage: /set think" in result.stderr
    call_line, *answer = result.stdout.strip().splitlines()
    assert call_line.startswith("→ get_weather(city=\"Paris"), result.stdout
    assert "31" in " ".join(answer)
    roles = [m["role"] for m in json.loads((tmp_path / "chat.json").read_text())["messages"]]
    assert roles == ["user", "assistant", "tool", "assistant"]
