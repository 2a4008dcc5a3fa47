"""The service's log: one JSON object a line (or plain text), with the ids of what is
being done (SPEC v2.4).

Each line carries `request_id`, `tenant`, `session_id` and `run_id` where they apply,
read from contextvars when the line is formatted: `RequestContext` (an ASGI middleware)
gives every request an id (returned as `X-Request-Id`) and the session and run ids of
its path; authentication adds the tenant; the runner binds a run's ids (and tenant) in
the run's tasks. A formatter of our own rather than python-json-logger or structlog:
the standard library's logging does the rest, the fields are few and fixed, and the
uvicorn access records get their method, path and status as fields of their own.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTEXT_FIELDS = ("request_id", "tenant", "session_id", "run_id")
REQUEST_ID_HEADER = "X-Request-Id"
# A caller's own request id is kept when it is this tame; otherwise a new one is made.
_CALLER_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# The ids in a path (at most 64 characters each, as the routes accept them).
_PATH_IDS = re.compile(
    r"^/(?:v1|viewer)/sessions/(?P<sid>[^/]{1,64})(?:/|$)(?:runs/(?P<rid>[^/]{1,64})(?:/|$))?"
)
# LogRecord attributes that are not `extra` fields (uvicorn's color_message is its
# message again, with terminal colours).
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


@dataclass
class RequestFields:
    """The ids of one HTTP request; mutable, so the tenant known after authentication
    also reaches the access log line written as the response starts."""

    request_id: str
    tenant: str | None = None
    session_id: str | None = None
    run_id: str | None = None


_request: ContextVar[RequestFields | None] = ContextVar("log_request", default=None)
_bound: ContextVar[Mapping[str, str]] = ContextVar("log_bound", default=MappingProxyType({}))


def bind_log_context(**fields: str | None) -> None:
    """Add fields to every line logged from here on by this task (and the tasks it
    starts later): a run's ids, its tenant."""
    current = dict(_bound.get())
    current.update({key: value for key, value in fields.items() if value is not None})
    _bound.set(current)


def bind_tenant(tenant: str) -> None:
    """The caller's tenant, once authenticated: on this request's lines (its access
    line too) and on whatever this task logs."""
    request = _request.get()
    if request is not None:
        request.tenant = tenant
    bind_log_context(tenant=tenant)


def log_fields() -> dict[str, str]:
    """The context fields of a line logged now."""
    fields: dict[str, str] = {}
    request = _request.get()
    if request is not None:
        for name in CONTEXT_FIELDS:
            value = getattr(request, name)
            if value is not None:
                fields[name] = value
    fields.update(_bound.get())
    return fields


def new_request_id() -> str:
    return f"req_{secrets.token_hex(8)}"


class RequestContext:
    """ASGI middleware: a request id for every HTTP request (the caller's `X-Request-Id`
    when it sends a tame one), returned in `X-Request-Id`; the session and run ids of
    the path. The request's task ends with it, so nothing is reset."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        request_id = given if _CALLER_REQUEST_ID.fullmatch(given) else new_request_id()
        fields = RequestFields(request_id)
        if found := _PATH_IDS.match(scope.get("path", "")):
            fields.session_id, fields.run_id = found["sid"], found["rid"]
        _request.set(fields)
        header = (REQUEST_ID_HEADER.lower().encode(), request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        await self.app(scope, receive, send_with_id)


def _access_fields(record: logging.LogRecord) -> dict[str, Any]:
    """uvicorn's access line as fields: its arguments are (client, method, path, HTTP
    version, status)."""
    args = record.args
    if record.name != "uvicorn.access" or not isinstance(args, tuple) or len(args) != 5:
        return {}
    client, method, path, _, status = args
    return {"client": client, "method": method, "path": path, "status": status}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the context fields,
    the record's `extra` fields, and the exception's traceback if any."""

    def __init__(self, replica: str | None = None) -> None:
        super().__init__()
        self._replica = replica

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self._replica is not None:
            line["replica"] = self._replica
        line.update(log_fields())
        line.update(_access_fields(record))
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The plain format for a terminal, with the context fields at the end."""

    def __init__(self, replica: str | None = None) -> None:
        tag = f" [{replica}]" if replica else ""
        super().__init__(f"%(asctime)s %(levelname)s{tag} %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = log_fields()
        if fields:
            text += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        return text


class ServiceLogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler `configure_logging` installs (found again by its class)."""


def wants_json(log_format: str | None) -> bool:
    """LOG_FORMAT, else JSON unless stderr is a terminal."""
    if log_format is not None:
        return log_format == "json"
    isatty = getattr(sys.stderr, "isatty", None)
    return not (callable(isatty) and isatty())


def configure_logging(
    log_format: str | None, level: str = "INFO", replica: str | None = None
) -> ServiceLogHandler:
    """One handler on the root logger, writing to stderr; uvicorn's loggers propagate to
    it (serve builds uvicorn's config without a logging config of its own)."""
    handler = ServiceLogHandler(sys.stderr)
    formatter = JsonFormatter(replica) if wants_json(log_format) else TextFormatter(replica)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for previous in [h for h in root.handlers if isinstance(h, ServiceLogHandler)]:
        root.removeHandler(previous)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # a library's warning becomes a line like the others
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        for other in list(logger.handlers):
            logger.removeHandler(other)
        logger.setLevel(logging.NOTSET)  # the root's level decides
        logger.propagate = True
    return handler
