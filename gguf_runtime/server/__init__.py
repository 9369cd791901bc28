"""The OpenAI-compatible HTTP server behind `gguf-runtime serve`.

One `LLM` is loaded; its engine runs in one dedicated thread (`worker.EngineWorker`) and every HTTP request
becomes a request in that engine, so concurrent clients share decode steps and cached prefix blocks. The HTTP
side (Starlette on uvicorn, `app.build_app`) is async and never computes on the model itself.

Modules: `errors` (OpenAI's error body), `protocol` (request bodies, validated with pydantic), `worker` (the
engine thread), `outputs` (engine deltas -> OpenAI choices), `chat` / `completions` / `embeddings` / `extras`
(one endpoint family each), `metrics` (Prometheus text), `security` (API key, body limit), `app` (routing).
"""
