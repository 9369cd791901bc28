"""Two ASGI middlewares: the API key (Authorization: Bearer, compared in constant time) and the request body
size limit. They are plain ASGI, not Starlette's BaseHTTPMiddleware, so streamed responses pass untouched."""

from __future__ import annotations

import hmac

from .errors import AUTHENTICATION, INVALID_REQUEST, APIError

PUBLIC_PATHS = frozenset({"/", "/health", "/favicon.ico"})  # what a browser or a load balancer needs without a key
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024


class BodyTooLarge(APIError):
    def __init__(self, limit: int):
        super().__init__(413, f"the request body is larger than this server's limit of {limit} bytes",
                         type=INVALID_REQUEST, code="request_too_large")


class APIKeyMiddleware:
    """Every route but PUBLIC_PATHS (and CORS preflights, which carry no credentials) needs the key."""

    def __init__(self, app, api_key: str):
        self.app = app
        self._key = api_key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] not in PUBLIC_PATHS and scope["method"] != "OPTIONS":
            if not hmac.compare_digest(_bearer(scope), self._key):
                error = APIError(401, "invalid or missing API key: send the header 'Authorization: Bearer <key>' "
                                      "with the key the server was started with (--api-key)",
                                 type=AUTHENTICATION, code="invalid_api_key",
                                 headers={"WWW-Authenticate": "Bearer"})
                await error.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _bearer(scope) -> bytes:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" else b""
    return b""


class BodyLimitMiddleware:
    """Refuses a declared Content-Length over the limit at once, and stops reading a body (chunked or lying
    about its length) as soon as it passes the limit: no request can make the server buffer more."""

    def __init__(self, app, max_bytes: int = DEFAULT_MAX_BODY_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await BodyTooLarge(self.max_bytes).response()(scope, receive, send)
                return
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)
