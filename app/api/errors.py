"""RFC 9457 problem+json errors and their handlers."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
MAX_BODY_BYTES = 1024 * 1024

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Problem(Exception):
    """Raise anywhere in a request to answer with problem+json."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        type_: str = "about:blank",
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.type = type_
        self.errors = errors
        self.headers = headers


def problem_response(
    status: int,
    detail: str | None,
    *,
    type_: str = "about:blank",
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": type_,
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = []
    malformed = False
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            malformed = True
        errors.append(
            {
                "field": _field(tuple(err.get("loc", ()))),
                "message": err.get("msg"),
                "type": err.get("type"),
            }
        )
    if malformed:
        return problem_response(400, "The request body is not valid JSON.", errors=errors)
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
    return problem_response(422, detail or "Invalid request.", errors=errors)


async def _problem_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(
        exc.status, exc.detail, type_=exc.type, errors=exc.errors, headers=exc.headers
    )


async def _http_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    return problem_response(exc.status_code, detail, headers=getattr(exc, "headers", None))


async def _data_error_handler(request: Request, exc: Exception) -> JSONResponse:
    # Input the database refuses (a value out of its range or encoding) is bad input,
    # not a server fault; validation catches the known cases before this backstop.
    log.warning("database refused input on %s %s: %s", request.method, request.url.path, exc)
    return problem_response(400, "The request contains a value the database cannot store.")


async def _unhandled_handler(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(500, "An internal error occurred.")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(Problem, _problem_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(DataError, _data_error_handler)
    app.add_exception_handler(Exception, _unhandled_handler)


class BodySizeLimit:
    """ASGI middleware: 413 problem+json for bodies over the limit, declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = StarletteHTTPException(413, f"The request body exceeds {self.max_bytes} bytes.")
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                response = problem_response(413, too_large.detail)
                await response(scope, receive, send)
                return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI re-raises HTTPExceptions from body reading: a problem+json 413.
                    raise too_large
            return message

        await self.app(scope, counting_receive, send)


_DOCUMENTED = {
    400: "Malformed request (invalid JSON, a header out of range)",
    401: "Missing or invalid API key; invalid, expired or revoked session token",
    403: "A session token used beyond its scope (or where only an API key may act)",
    404: "No such session (or another tenant's), run, check or screenshot",
    409: "Conflict with the current state",
    413: "Request body over 1 MiB",
    422: "Validation failed; `errors` names each field",
    429: "Over the tenant's TENANT_REQUESTS_PER_S; retry after `Retry-After` seconds",
    503: "Shutting down or not ready",
}


def document_problems(app: FastAPI) -> None:
    """Make the generated OpenAPI say what the service sends on errors: problem+json
    (FastAPI documents its own HTTPValidationError shape otherwise)."""
    from fastapi.openapi.utils import get_openapi

    from app.api import idempotency
    from app.api.schemas import Problem as ProblemModel

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        idempotency.document(schema)  # the Idempotency-Key header of the POSTs, and 409
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        schemas["Problem"] = ProblemModel.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        for path, operations in schema.get("paths", {}).items():
            if not path.startswith("/v1/"):
                continue  # /healthz and /readyz answer with their own Health body
            for method, operation in operations.items():
                codes = {400, 401, 422, 429}  # 429: any caller with a tenant may be limited
                if "{sid}" in path:
                    codes.add(404)
                if method != "get" or path == "/v1/sessions":
                    codes.add(403)  # read is every token's scope; the rest is not
                if method == "post":
                    codes.add(413)
                if method == "post" and path in ("/v1/sessions", "/v1/sessions/{sid}/runs"):
                    codes.add(503)  # new runs are refused while the service shuts down
                responses = operation.setdefault("responses", {})
                codes |= {int(c) for c in responses if c.isdigit() and int(c) >= 400}
                for code in sorted(codes):
                    responses[str(code)] = {"description": _DOCUMENTED[code], "content": problem}
                responses["429"]["headers"] = {
                    "Retry-After": {
                        "description": "Seconds until the tenant's window ends",
                        "schema": {"type": "integer"},
                    }
                }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
