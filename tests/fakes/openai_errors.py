"""The OpenAI API's error envelope, as the fake Responses server sends it.

Every error is `{"error": {"message", "type", "param", "code"}}` with an
`x-request-id` header. The SDK hands the inner object to its exception as
`.body` and copies `type`, `param` and `code` onto it; the class follows the
status (400 BadRequestError, 401 AuthenticationError, 404 NotFoundError,
429 RateLimitError, >= 500 InternalServerError).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.http_server import Reply

# What the API puts in `type` for the statuses a test is likely to script.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "requests",
}
_DEFAULT_CODES = {429: "rate_limit_exceeded"}
_DEFAULT_MESSAGES = {
    429: "Rate limit reached for requests. Please try again later.",
    500: "The server had an error while processing your request. Sorry about that!",
    502: "Bad gateway.",
    503: "The engine is currently overloaded, please try again later.",
}


def new_id(prefix: str) -> str:
    """An id shaped like the API's (`resp_...`, `cu_...`, `call_...`, `req_...`): hex after
    the prefix, since some clients split ids on `_`."""
    return f"{prefix}_{secrets.token_hex(24)}"


class ApiError(Exception):
    """Raised while handling a request: answer with this status and error object."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.param = param
        self.code = code


def invalid(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    """A 400 invalid_request_error, the API's answer to every malformed request."""
    return ApiError(400, message, param=param, code=code)


def unknown_parameter(param: str) -> ApiError:
    """The API's answer to a field it does not know (typos do not pass silently)."""
    return invalid(f"Unknown parameter: '{param}'.", param, "unknown_parameter")


def missing_parameter(param: str) -> ApiError:
    """The API's answer to a required field left out."""
    return invalid(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def invalid_value(param: str, value: Any, allowed: list[str] | tuple[str, ...]) -> ApiError:
    """The API's answer to a value outside an enumeration, listing the allowed ones."""
    supported = ", ".join(f"'{a}'" for a in allowed)
    return invalid(
        f"Invalid value: '{value}'. Supported values are: {supported}.", param, "invalid_value"
    )


def invalid_type(param: str, expected: str, value: Any) -> ApiError:
    """The API's answer to a value of the wrong JSON type."""
    got = {
        bool: "a boolean",
        int: "an integer",
        float: "a decimal",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(value), "null")
    return invalid(
        f"Invalid type for '{param}': expected {expected}, but got {got} instead.",
        param,
        "invalid_type",
    )


_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)


def authenticate(headers: Mapping[str, str], api_key: str | None) -> None:
    """401 unless `Authorization: Bearer <key>` is present (and is `api_key`, when one is set).

    The SDK sends its api_key only this way; there is no x-api-key header as with Anthropic.
    """
    bearer = headers.get("authorization", "")
    key = bearer[7:].strip() if bearer.lower().startswith("bearer ") else ""
    if not key:
        raise ApiError(401, _NO_KEY)
    if api_key is not None and key != api_key:
        # The API echoes the key back masked, keeping only its ends.
        masked = f"{key[:3]}{'*' * max(0, len(key) - 7)}{key[-4:]}" if len(key) > 7 else key
        raise ApiError(
            401,
            f"Incorrect API key provided: {masked}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            code="invalid_api_key",
        )


def json_reply(payload: Mapping[str, Any]) -> Reply:
    """A 200 JSON reply with the headers the API always sends."""
    headers = [
        (b"content-type", b"application/json"),
        (b"x-request-id", new_id("req").encode()),
        (b"openai-processing-ms", b"1"),
    ]
    return Reply(200, headers, [json.dumps(payload).encode()])


@dataclass(frozen=True)
class ScriptedError:
    """A scripted error reply: the API's envelope for `status` unless `body` replaces it.

    `error_type` and `code` default from the status (429 `requests` / `rate_limit_exceeded`,
    5xx `server_error`). A `str` body is sent as is: with status 200 it makes a malformed reply.
    """

    status: int
    message: str | None = None
    error_type: str | None = None
    param: str | None = None
    code: str | None = None
    retry_after: float | None = None
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def reply(self) -> Reply:
        body = self.body
        if body is None:
            default_type = "server_error" if self.status >= 500 else "invalid_request_error"
            error = {
                "message": self.message or _DEFAULT_MESSAGES.get(self.status, "Error"),
                "type": self.error_type or ERROR_TYPES.get(self.status, default_type),
                "param": self.param,
                "code": self.code or _DEFAULT_CODES.get(self.status),
            }
            body = {"error": error}
        raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"x-request-id", new_id("req").encode()),
        ]
        if self.retry_after is not None:
            seconds = float(self.retry_after)
            value = str(int(seconds)) if seconds.is_integer() else str(seconds)
            headers.append((b"retry-after", value.encode()))
            # The API also sends the millisecond form, which the SDK prefers when present.
            headers.append((b"retry-after-ms", str(round(seconds * 1000)).encode()))
        headers.extend((k.lower().encode(), v.encode()) for k, v in self.headers.items())
        return Reply(self.status, headers, [raw])

    @classmethod
    def from_api_error(cls, error: ApiError) -> ScriptedError:
        return cls(
            error.status,
            error.message,
            error_type=error.error_type,
            param=error.param,
            code=error.code,
        )
