"""The Starlette application: routes, middleware (CORS only when asked, body limit, API key) and the
exception handlers that give every refusal OpenAI's error body."""

from __future__ import annotations

import contextlib
import logging

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import chat, completions, embeddings, extras, metrics
from .errors import NOT_FOUND, SERVER_ERROR, APIError, one_line
from .security import DEFAULT_MAX_BODY_BYTES, APIKeyMiddleware, BodyLimitMiddleware
from .service import ClientGone, Service

log = logging.getLogger("gguf_runtime.server")


def build_app(service: Service, *, api_key: str | None = None, cors_origins: tuple[str, ...] = (),
              max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Starlette:
    """The ASGI app serving `service`. The service's engine thread starts with the app and stops with it."""
    routes = [
        Route("/v1/chat/completions", chat.chat_completions, methods=["POST"]),
        Route("/v1/completions", completions.completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings.embeddings, methods=["POST"]),
        Route("/v1/models", extras.models, methods=["GET"]),
        Route("/tokenize", extras.tokenize, methods=["POST"]),
        Route("/detokenize", extras.detokenize, methods=["POST"]),
        Route("/health", extras.health, methods=["GET"]),
        Route("/metrics", metrics.metrics, methods=["GET"]),
        Route("/", extras.index, methods=["GET"]),
    ]
    middleware = []
    if cors_origins:  # outermost, so preflights are answered before the key is asked for
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                                     allow_headers=["Authorization", "Content-Type"]))
    middleware.append(Middleware(BodyLimitMiddleware, max_bytes=max_body_bytes))
    if api_key:
        middleware.append(Middleware(APIKeyMiddleware, api_key=api_key))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        service.start()
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(service.stop)

    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan, exception_handlers={
        APIError: _api_error, HTTPException: _http_error, ClientGone: _client_gone, Exception: _internal_error})
    app.state.service = service
    return app


async def _api_error(request: Request, exc: APIError) -> Response:
    return exc.response()


async def _http_error(request: Request, exc: HTTPException) -> Response:
    """Starlette's own 404 / 405 in OpenAI's shape."""
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path} (the API is under /v1, e.g. GET /v1/models)"
        return APIError(404, message, type=NOT_FOUND, code="not_found").response()
    return APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                    headers=dict(exc.headers or {})).response()


async def _client_gone(request: Request, exc: ClientGone) -> Response:
    return Response(status_code=499)  # nobody reads it: the connection is closed


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return APIError(500, f"internal server error: {type(exc).__name__}: {one_line(exc)}", type=SERVER_ERROR).response()
