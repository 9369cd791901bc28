"""`gguf-runtime serve`: a real server in a subprocess on a free loopback port, spoken to with the official
`openai` client (and raw HTTP where the client would hide what the server sent).

One server serves the whole module; the last test stops it with SIGTERM.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import time
import urllib.error
import urllib.request

import numpy as np
import openai
import pytest

from gguf_runtime import LLM, SamplingParams
from serve_process import ServerProcess, parse_metrics

API_KEY = "test-key-0123456789"
N_CTX = 512
MAX_NUM_SEQS = 16
MAX_QUEUE = 4
QUESTIONS = [f"Name {word} in one short sentence." for word in (
    "a colour", "a fruit", "a planet", "an animal", "a river", "a city", "a tree", "a metal", "a bird",
    "a flower", "a sport", "a language", "an ocean", "a mountain", "a tool", "a musical instrument")]


class Server:
    def __init__(self, process: ServerProcess):
        self.process, self.proc, self.url = process, process.proc, process.url

    def client(self, api_key: str = API_KEY, **kwargs) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, **kwargs)

    def raw(self, method: str, path: str, body: bytes | None = None, key: str | None = API_KEY,
            content_type: str = "application/json") -> tuple[int, dict, bytes]:
        """(status, headers, body) of one raw HTTP request."""
        headers = {"Content-Type": content_type}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def metrics(self) -> dict[str, float]:
        status, _, body = self.raw("GET", "/metrics")
        assert status == 200
        return parse_metrics(body.decode())

    def log(self) -> str:
        return self.process.read_log()


@pytest.fixture(scope="module")
def server(smollm2_path):
    env = {**os.environ, "GGUF_RUNTIME_API_KEY": API_KEY}
    process = ServerProcess(smollm2_path, "--n-ctx", str(N_CTX), "--max-num-seqs", str(MAX_NUM_SEQS),
                            "--max-queue", str(MAX_QUEUE), "--max-body-bytes", "65536", env=env)
    yield Server(process)
    process.stop()


@pytest.fixture(scope="module")
def llm(smollm2_path):
    return LLM(model=str(smollm2_path), n_ctx=N_CTX)


def _messages(question: str) -> list[dict]:
    return [{"role": "system", "content": "You are a concise assistant."}, {"role": "user", "content": question}]


@pytest.fixture(scope="module")
def solo(llm):
    """Each question's greedy answer from LLM.chat, one at a time."""
    params = SamplingParams(temperature=0, max_tokens=24)
    return [llm.chat(_messages(q), params)[0].outputs[0] for q in QUESTIONS]


def test_chat_equals_llm_chat_greedy(server, solo):
    client = server.client()
    reply = client.chat.completions.create(model="smollm2-135m", messages=_messages(QUESTIONS[0]), temperature=0,
                                           max_tokens=24)
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == solo[0].text
    assert reply.choices[0].finish_reason == solo[0].finish_reason
    assert reply.usage.completion_tokens == len(solo[0].token_ids)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streaming_chat_equals_llm_chat_greedy_and_reports_usage(server, solo):
    stream = server.client().chat.completions.create(
        model="smollm2-135m", messages=_messages(QUESTIONS[1]), temperature=0, max_completion_tokens=24,
        stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == solo[1].text
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [solo[1].finish_reason]
    assert not chunks[-1].choices and chunks[-1].usage.completion_tokens == len(solo[1].token_ids)


def test_sixteen_concurrent_streams_each_equal_their_solo_run(server, solo):
    client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)

    async def one(question: str) -> tuple[str, str]:
        stream = await client.chat.completions.create(model="smollm2-135m", messages=_messages(question),
                                                      temperature=0, max_tokens=24, stream=True)
        parts, reason = [], None
        async for chunk in stream:
            parts.append(chunk.choices[0].delta.content or "")
            reason = chunk.choices[0].finish_reason or reason
        return "".join(parts), reason

    async def all_of_them():
        try:
            return await asyncio.gather(*(one(q) for q in QUESTIONS))
        finally:
            await client.close()

    results = asyncio.run(all_of_them())
    assert [text for text, _ in results] == [s.text for s in solo]
    assert [reason for _, reason in results] == [s.finish_reason for s in solo]


def _idle(server: Server, timeout: float = 20.0) -> dict[str, float]:
    """The metrics once nothing runs, waits or is in flight."""
    deadline = time.monotonic() + timeout
    while True:
        m = server.metrics()
        if m["requests_running"] == 0 and m["requests_waiting"] == 0 and m["requests_in_flight"] == 0:
            return m
        if time.monotonic() > deadline:
            pytest.fail(f"the server did not become idle: {m}")
        time.sleep(0.05)


def test_client_disconnecting_mid_stream_frees_its_blocks(server):
    before = _idle(server)
    stream = server.client().chat.completions.create(
        model="smollm2-135m", messages=_messages("Write a long story about a dragon."), max_tokens=400,
        temperature=0, stream=True)
    for i, _ in enumerate(stream):
        if i == 3:
            break
    assert server.metrics()["kv_blocks_used"] > before["kv_blocks_used"]
    stream.close()  # the connection closes mid-stream
    after = _idle(server)
    assert after["kv_blocks_used"] == before["kv_blocks_used"]
    assert after["requests_aborted_total"] == before["requests_aborted_total"] + 1


def test_full_queue_answers_503(server):
    client = server.client()
    before = _idle(server)
    holder = client.completions.create(model="smollm2-135m", prompt=["Once upon a time"] * (MAX_NUM_SEQS + MAX_QUEUE - 2),
                                       max_tokens=300, stream=True)
    next(iter(holder))
    with pytest.raises(openai.InternalServerError) as err:
        client.completions.create(model="smollm2-135m", prompt=["Hello", "Hi", "Hey"], max_tokens=4)
    assert err.value.status_code == 503 and err.value.code == "server_busy" and "busy" in err.value.message
    holder.close()
    assert _idle(server)["kv_blocks_used"] == before["kv_blocks_used"]


def test_errors_have_openai_status_and_body(server):
    def error_of(status: int, body: bytes) -> dict:
        error = json.loads(body)["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
        return error

    status, _, body = server.raw("POST", "/v1/chat/completions", b"{not json")
    assert status == 400 and "JSON" in error_of(status, body)["message"]
    status, _, body = server.raw("POST", "/v1/chat/completions", b"[1, 2]")
    assert status == 400
    wrong_type = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}
    status, _, body = server.raw("POST", "/v1/chat/completions", json.dumps(wrong_type).encode())
    assert status == 400 and error_of(status, body)["param"] == "temperature"
    status, _, body = server.raw("POST", "/v1/chat/completions", json.dumps({"messages": "hi"}).encode())
    assert status == 400 and error_of(status, body)["param"] == "messages"
    status, _, body = server.raw("POST", "/v1/completions", json.dumps({"prompt": "x", "n": 99}).encode())
    assert status == 400 and error_of(status, body)["param"] == "n"
    status, _, body = server.raw("POST", "/v1/chat/completions", b"x" * 70000)
    assert status == 413 and error_of(status, body)["code"] == "request_too_large"
    status, _, body = server.raw("GET", "/v2/nothing")
    assert status == 404 and error_of(status, body)

    status, headers, body = server.raw("GET", "/v1/models", key=None)
    assert status == 401 and error_of(status, body)["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        server.client(api_key="wrong-key").models.list()
    assert server.raw("GET", "/health", key=None)[0] == 200  # health and the page stay public

    client = server.client()
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert err.value.code == "model_not_found"


def test_prompt_longer_than_the_context_gets_400(server):
    before = server.metrics()
    with pytest.raises(openai.BadRequestError) as err:
        server.client().chat.completions.create(model="smollm2-135m",
                                                messages=[{"role": "user", "content": "hello " * N_CTX}])
    assert err.value.code == "context_length_exceeded" and str(N_CTX) in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        server.client().completions.create(model="smollm2-135m", prompt=list(range(1, N_CTX + 1)))
    assert err.value.code == "context_length_exceeded"
    after = server.metrics()
    assert after["prompt_tokens_total"] == before["prompt_tokens_total"]  # nothing reached the engine


def test_completions_list_echo_and_logprobs(server, llm):
    prompts = ["The capital of France is", "One, two, three,"]
    reply = server.client().completions.create(model="smollm2-135m", prompt=prompts, temperature=0, max_tokens=6,
                                               echo=True, logprobs=2)
    expected = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=6, logprobs=2))
    assert [c.index for c in reply.choices] == [0, 1]
    for choice, prompt, exp in zip(reply.choices, prompts, expected):
        assert choice.text == prompt + exp.outputs[0].text
        lp = choice.logprobs
        n_prompt = len(exp.prompt_token_ids)
        assert len(lp.tokens) == len(lp.token_logprobs) == n_prompt + len(exp.outputs[0].token_ids)
        assert lp.token_logprobs[0] is None and all(v <= 0 for v in lp.token_logprobs[1:])
        generated = lp.token_logprobs[n_prompt:]
        assert np.allclose(generated, [d[t] for d, t in zip(exp.outputs[0].logprobs, exp.outputs[0].token_ids)],
                           atol=1e-4)
        assert all(len(top) == 2 for top in lp.top_logprobs[1:])
    assert reply.usage.prompt_tokens == sum(len(e.prompt_token_ids) for e in expected)


def test_chat_logprobs_and_n(server):
    reply = server.client().chat.completions.create(
        model="smollm2-135m", messages=_messages(QUESTIONS[2]), n=2, temperature=0.8, seed=7, max_tokens=8,
        logprobs=True, top_logprobs=3)
    assert [c.index for c in reply.choices] == [0, 1]
    for choice in reply.choices:
        entries = choice.logprobs.content
        assert entries and all(len(e.top_logprobs) == 3 for e in entries)
        assert all(e.logprob <= e.top_logprobs[0].logprob + 1e-6 for e in entries)
        assert "".join(bytes(e.bytes).decode("utf-8", "replace") for e in entries).strip()


def test_embeddings_equal_llm_embed(server, llm):
    texts = ["A cat sat on the mat.", "Quarterly revenue grew by four percent."]
    expected = [np.array(o.outputs.embedding) for o in llm.embed(texts, pooling="mean")]
    client = server.client()
    floats = client.embeddings.create(model="smollm2-135m", input=texts, encoding_format="float")
    b64 = client.embeddings.create(model="smollm2-135m", input=texts)  # the client asks for base64 itself
    for got_f, got_b, exp in zip(floats.data, b64.data, expected):
        assert np.allclose(got_f.embedding, exp, atol=1e-6) and np.allclose(got_b.embedding, exp, atol=1e-6)
        assert abs(np.linalg.norm(exp) - 1) < 1e-5
    status, _, body = server.raw("POST", "/v1/embeddings", json.dumps(
        {"input": "x", "encoding_format": "base64"}).encode())
    vector = np.frombuffer(base64.b64decode(json.loads(body)["data"][0]["embedding"]), "<f4")
    assert status == 200 and vector.shape == (llm.config.n_embd,)


def test_models_tokenize_detokenize_metrics(server, llm):
    models = server.client().models.list()
    assert [m.id for m in models.data] == ["smollm2-135m"] and models.data[0].max_model_len == N_CTX
    text = "Hello <|im_start|> world"
    status, _, body = server.raw("POST", "/tokenize", json.dumps({"content": text}).encode())
    tokens = json.loads(body)["tokens"]
    assert status == 200 and tokens == llm.tokenize(text, add_special=False, parse_special=True)
    status, _, body = server.raw("POST", "/detokenize", json.dumps({"tokens": tokens}).encode())
    assert status == 200 and json.loads(body)["content"] == llm.detokenize(tokens)
    status, headers, body = server.raw("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert "# TYPE gguf_runtime_generation_tokens_total counter" in body.decode()
    m = server.metrics()
    assert m["generation_tokens_total"] > 0 and m["kv_blocks_total"] >= m["kv_blocks_used"]
    status, headers, _ = server.raw("GET", "/", key=None)
    assert status == 200 and headers["content-type"].startswith("text/html")


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                         "age": {"type": "integer", "minimum": 0, "maximum": 150}},
          "required": ["name", "age"], "additionalProperties": False}


def test_response_format_json_schema_is_followed(server):
    import jsonschema

    client = server.client()
    for stream in (False, True):
        kwargs = dict(model="smollm2-135m", max_tokens=60, temperature=1.0, seed=3,
                      messages=[{"role": "user", "content": "Describe a person as JSON."}],
                      response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}})
        if stream:
            text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
                stream=True, **kwargs) if c.choices)
        else:
            text = client.chat.completions.create(**kwargs).choices[0].message.content
        jsonschema.validate(json.loads(text), PERSON)


def test_bad_schema_and_bad_tools_get_400(server):
    client = server.client()
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="smollm2-135m", messages=[{"role": "user", "content": "hi"}],
                                       response_format={"type": "json_schema",
                                                        "json_schema": {"name": "x", "schema": {"type": "nope"}}})
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="smollm2-135m", messages=[{"role": "user", "content": "hi"}],
                                       tools=[{"type": "function"}], tool_choice="required")


def test_tool_choice_required_returns_a_valid_tool_call(server):
    client = server.client()
    for stream in (False, True):
        kwargs = dict(model="smollm2-135m", max_tokens=60, temperature=0,
                      messages=[{"role": "user", "content": "What is the weather in Paris?"}],
                      tools=[WEATHER_TOOL], tool_choice="required")
        if stream:
            calls, reasons = [], []
            for c in client.chat.completions.create(stream=True, **kwargs):
                if c.choices:
                    calls += c.choices[0].delta.tool_calls or []
                    reasons.append(c.choices[0].finish_reason)
            assert reasons[-1] == "tool_calls"
        else:
            choice = client.chat.completions.create(**kwargs).choices[0]
            assert choice.finish_reason == "tool_calls"
            calls = choice.message.tool_calls
        assert calls and calls[0].function.name == "get_weather"
        assert isinstance(json.loads(calls[0].function.arguments)["city"], str)


def test_sigterm_shuts_the_server_down(server):
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0, server.log()
    assert "stopped" in server.log()
