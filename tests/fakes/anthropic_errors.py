"""The Anthropic API's error envelope, as the fake server sends it.

`{"type": "error", "error": {"type": ..., "message": ...}, "request_id": ...}`
with a `request-id` header; the SDK maps the status to its exception class
(400 BadRequestError, 401 AuthenticationError, 413 ContentTooLargeError,
429 RateLimitError, 500 InternalServerError, 529 OverloadedError, a subclass
of InternalServerError).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.anthropic_messages import new_id
from tests.fakes.http_server import Reply

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_DEFAULT_MESSAGES = {
    429: "Number of request tokens has exceeded your per-minute rate limit",
    500: "Internal server error",
    529: "Overloaded",
}


class ApiError(Exception):
    """Raised while handling a request: answer with this status, error type and message."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


def invalid(message: str) -> ApiError:
    """A 400 invalid_request_error, the API's answer to every malformed request."""
    return ApiError(400, "invalid_request_error", message)


@dataclass(frozen=True)
class ScriptedError:
    """A scripted error reply: the API's envelope for `status` unless `body` replaces it.

    The error type defaults from the status (429 rate_limit_error, 529 overloaded_error, other
    5xx api_error). A `str` body is sent as is: with status 200 it makes a malformed reply.
    """

    status: int
    message: str | None = None
    error_type: str | None = None
    retry_after: float | None = None
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def reply(self) -> Reply:
        request_id = new_id("req")
        body = self.body
        if body is None:
            error_type = self.error_type or ERROR_TYPES.get(self.status, "api_error")
            message = self.message or _DEFAULT_MESSAGES.get(self.status, error_type)
            error = {"type": error_type, "message": message}
            body = {"type": "error", "error": error, "request_id": request_id}
        raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"request-id", request_id.encode())]
        if self.retry_after is not None:
            seconds = float(self.retry_after)
            value = str(int(seconds)) if seconds.is_integer() else str(seconds)
            headers.append((b"retry-after", value.encode()))
        headers.extend((k.lower().encode(), v.encode()) for k, v in self.headers.items())
        return Reply(self.status, headers, [raw])

    @classmethod
    def from_api_error(cls, error: ApiError) -> ScriptedError:
        return cls(error.status, error.message, error.error_type)
