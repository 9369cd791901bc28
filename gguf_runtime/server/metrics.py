"""GET /metrics: the engine's counters in Prometheus' text exposition format (version 0.0.4).

Values come from the snapshot the engine thread takes after every step, so a scrape never waits for a step.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from .service import Service

PREFIX = "gguf_runtime_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _families(service: Service) -> list[tuple[str, str, str, float]]:
    """(name, type, help, value) of every metric."""
    snap = service.worker.snapshot
    m = snap.engine
    return [
        ("requests_running", "gauge", "Sequences decoding now.", m.running),
        ("requests_waiting", "gauge", "Sequences queued in the engine, not yet admitted.", m.waiting),
        ("requests_in_flight", "gauge", "Engine requests the HTTP side has submitted and not yet seen finish.",
         service.in_flight),
        ("kv_blocks_total", "gauge", "Blocks of the shared paged KV pool.", m.kv_blocks_total),
        ("kv_blocks_used", "gauge", "KV blocks held by sequences.", m.kv_blocks_used),
        ("kv_blocks_free", "gauge", "KV blocks free (cached prefixes nobody holds count as free).", m.kv_blocks_free),
        ("prompt_tokens_total", "counter", "Prompt tokens of all requests.", m.prompt_tokens_total),
        ("prompt_tokens_cached_total", "counter", "Prompt tokens reused from the prefix cache.",
         m.prompt_tokens_cached_total),
        ("generation_tokens_total", "counter", "Tokens generated.", m.generation_tokens_total),
        ("requests_finished_total", "counter", "Engine requests finished.", m.requests_finished_total),
        ("requests_aborted_total", "counter", "Engine requests aborted (client gone, shutdown).",
         m.requests_aborted_total),
        ("requests_rejected_total", "counter", "HTTP requests refused because the queue was full.",
         service.rejected_total),
        ("generation_tokens_per_second", "gauge", "Tokens generated per second over the last 10 s.",
         snap.tokens_per_second),
        ("engine_steps_total", "counter", "Engine steps run.", snap.steps_total),
        ("engine_step_seconds_total", "counter", "Seconds spent in engine steps.", snap.step_seconds_total),
    ]


def render(service: Service) -> str:
    lines = []
    for name, kind, text, value in _families(service):
        lines += [f"# HELP {PREFIX}{name} {text}", f"# TYPE {PREFIX}{name} {kind}", f"{PREFIX}{name} {_number(value)}"]
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"


async def metrics(request: Request) -> Response:
    return Response(render(request.app.state.service), media_type=CONTENT_TYPE)
