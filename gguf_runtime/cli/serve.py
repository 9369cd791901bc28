"""`gguf-runtime serve`: the OpenAI-compatible HTTP server (gguf_runtime/server) on uvicorn."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import threading

import click

from ._app import UserError, main
from ._load import load_llm
from ._options import model_options, pop_speculative, speculative_options

API_KEY_ENV = "GGUF_RUNTIME_API_KEY"
SHUTDOWN_GRACE_SECONDS = 10.0  # in-flight requests may finish this long after Ctrl-C / SIGTERM
POOLINGS = ("mean", "cls", "last")  # scoring.POOLINGS, spelled out so `--help` does not import numba


@main.command()
@model_options
@speculative_options
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback exposes the model to the network (use --api-key).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="TCP port (0 = any free port; the URL printed at start-up names it).")
@click.option("--api-key", envvar=API_KEY_ENV, default=None, metavar="KEY",
              help=f"Require 'Authorization: Bearer KEY' on every route but / and /health (or set ${API_KEY_ENV}).")
@click.option("--max-num-seqs", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Sequences decoded together (continuous batching); also the most `n` a request may ask.")
@click.option("--max-queue", type=click.IntRange(0), default=64, show_default=True,
              help="Requests that may wait beyond the running ones; more get 503 'server busy'.")
@click.option("--kv-cache-tokens", type=click.IntRange(min=8), default=None,
              help="Positions the shared KV pool holds for all sequences (default: max-num-seqs x n-ctx; the "
                   "memory is committed only as it is used).")
@click.option("--cors", "cors_origins", multiple=True, metavar="ORIGIN",
              help="Allow browser pages from ORIGIN (repeatable; '*' for any). Off by default.")
@click.option("--pooling", type=click.Choice(POOLINGS), default=None,
              help="Embedding pooling for /v1/embeddings, as llama.cpp's --pooling (default: the model's own, "
                   "else mean).")
@click.option("--served-model-name", default=None, metavar="NAME",
              help="The model id /v1/models shows (default: the catalog name or file name).")
@click.option("--max-body-bytes", type=click.IntRange(min=1024), default=8 * 1024 * 1024, show_default=True,
              help="Largest request body accepted.")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              default="warning", show_default=True, help="uvicorn's log level ('info' logs every request).")
def serve(model: str, n_ctx: int, threads: int | None, kv_type: str, host: str, port: int, api_key: str | None,
          max_num_seqs: int, max_queue: int, kv_cache_tokens: int | None, cors_origins: tuple[str, ...],
          pooling: str | None, served_model_name: str | None, max_body_bytes: int, log_level: str,
          **speculative) -> None:
    """Serve MODEL over the OpenAI HTTP API (/v1/chat/completions, /v1/completions, /v1/embeddings,
    /v1/models) plus /tokenize, /detokenize, /health, /metrics and a chat page at /.

    Concurrent requests share decode steps and cached prompt prefixes. Ctrl-C or SIGTERM stops it: new
    requests are refused, those in flight get 10 s to finish, then a clean error.
    """
    listener = _listen(host, port)  # before the slow load: a taken port fails at once
    llm = load_llm(model, n_ctx, threads, kv_type, max_num_seqs=max_num_seqs,
                   kv_cache_tokens=kv_cache_tokens or max_num_seqs * n_ctx, **pop_speculative(speculative))
    import uvicorn

    from ..scoring import default_pooling
    from ..server.app import build_app
    from ..server.service import Service

    _warm_up(llm)
    service = Service(llm, served_model_name or (None if os.sep in model else model), max_queue,
                      pooling or default_pooling(llm.gguf.metadata, llm.config.arch))
    app = build_app(service, api_key=api_key, cors_origins=cors_origins, max_body_bytes=max_body_bytes)
    config = uvicorn.Config(app, log_level=log_level, access_log=log_level in ("info", "debug"),
                            timeout_graceful_shutdown=int(SHUTDOWN_GRACE_SECONDS) + 5, server_header=False)
    bound_host, bound_port = listener.getsockname()[:2]
    url = f"http://{_url_host(bound_host)}:{bound_port}"
    if not api_key and not _is_loopback(host):
        click.echo(f"warning: listening on {host} without --api-key: anyone on the network can use the model",
                   err=True)

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started:
                click.echo(f"gguf-runtime serving {service.model_id} at {url}/v1 (chat page: {url}/); "
                           f"Ctrl-C stops", err=False)

        def handle_exit(self, sig, frame):
            service.begin_shutdown(SHUTDOWN_GRACE_SECONDS)
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self):
            # uvicorn re-raises the signal after shutting down (the process would die of it); a clean stop
            # should exit 0, so the handlers are installed and restored without that
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    Server(config).run(sockets=[listener])
    click.echo("gguf-runtime serve: stopped", err=True)


def _listen(host: str, port: int) -> socket.socket:
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as err:
        raise UserError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    sock.set_inheritable(True)
    return sock


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _warm_up(llm) -> None:
    """Load the kernels (from numba's cache, or compile them) before the URL is printed, so the first client
    does not pay for it: two short prompts run through the engine, batched."""
    from ..sampling import SamplingParams

    llm.generate(["Hello", "The capital of France is"], SamplingParams(temperature=0, max_tokens=2))
