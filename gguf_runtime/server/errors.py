"""OpenAI's error body, and the one exception every handler raises for a request it refuses.

The official clients turn ``{"error": {"message", "type", "param", "code"}}`` with the HTTP status into their
typed exceptions (400 -> BadRequestError, 401 -> AuthenticationError, 404 -> NotFoundError, 429 ->
RateLimitError, ...), so a refusal must have exactly this shape to read as a clear one-line message there.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

INVALID_REQUEST = "invalid_request_error"
AUTHENTICATION = "authentication_error"
NOT_FOUND = "not_found_error"
SERVER_BUSY = "server_busy_error"
SERVER_ERROR = "server_error"


class APIError(Exception):
    """A request the server refuses: HTTP status plus OpenAI's error fields. `message` is one line."""

    def __init__(self, status: int, message: str, *, type: str = INVALID_REQUEST, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> Response:
        return Response(json.dumps(self.body()), status_code=self.status, headers=self.headers,
                        media_type="application/json")


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def context_length_exceeded(n_prompt: int, n_ctx: int, what: str = "prompt") -> APIError:
    """OpenAI's wording and code for a prompt that cannot fit the context window."""
    return APIError(400, f"This model's maximum context length is {n_ctx} tokens. However, your {what} resulted "
                         f"in {n_prompt} tokens (at least one more is needed to generate). Please reduce the "
                         f"length of the {what} or restart the server with a larger --n-ctx.",
                    param="messages" if what == "messages" else "prompt", code="context_length_exceeded")


def one_line(text: object) -> str:
    return " ".join(str(text).split())
