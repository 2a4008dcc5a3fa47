"""Request and response models: the wire contract openapi/openapi.json is generated from."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AnyUrl,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    field_validator,
)

from app.agents.safety import ACTION_TYPES
from app.agents.structured import check_schema as check_output_schema
from app.events.schemas import Event, Usage

# One model for the REST resource and the data of the safety_check.* events.
from app.events.schemas import SafetyCheck as SafetyCheck
from app.events.types import EVENT_TYPES
from app.webhooks.outbox import DEFAULT_EVENTS as WEBHOOK_DEFAULT_EVENTS

MAX_TEXT = 100_000
# Ids and cursors: what new_id() and screenshot ids are made of (anything else is a 422).
ID_PATTERN = r"^[A-Za-z0-9_-]+$"
MAX_SEQ = 2**63 - 1
ANTHROPIC_TOOL_VERSIONS = (
    "computer_20241022",
    "computer_20250124",
    "computer_20251124",
    "computer_toolset_20260801",
)
OPENAI_TOOL_VERSIONS = ("computer_use_preview", "computer")

T = TypeVar("T")


def check_storable(value: Any) -> Any:
    """Reject what a database or a JSON encoder cannot take back out intact: NUL
    characters (Postgres text refuses them), lone surrogates (not UTF-8) and
    non-finite numbers (not JSON), at any depth."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError("must be valid Unicode text (no lone surrogates)") from exc
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_storable(key)
            check_storable(item)
    elif isinstance(value, list | tuple):
        for item in value:
            check_storable(item)
    return value


class _Strict(BaseModel):
    # Unknown fields are rejected so typos do not pass silently.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        return check_storable(value)


class DisplaySpec(_Strict):
    width: int = Field(default=1280, ge=200, le=7680)
    height: int = Field(default=800, ge=200, le=4320)


class ComputerSpec(_Strict):
    type: Literal["browser", "cdp", "kernel", "fake"] = "browser"
    start_url: str | None = Field(default=None, max_length=8192)
    display: DisplaySpec = Field(default_factory=DisplaySpec)
    cdp_url: str | None = Field(default=None, max_length=8192)

    @field_validator("start_url")
    @classmethod
    def _start_url(cls, value: str | None) -> str | None:
        # Never file: (the server's own files) or other local schemes.
        if value is not None and value != "about:blank":
            url = AnyUrl(value)
            if url.scheme not in ("http", "https"):
                raise ValueError("start_url must be an http(s) URL or about:blank")
        return value

    @field_validator("cdp_url")
    @classmethod
    def _cdp_url(cls, value: str | None) -> str | None:
        if value is not None and AnyUrl(value).scheme not in ("http", "https", "ws", "wss"):
            raise ValueError("cdp_url must be an http(s) DevTools endpoint or a ws(s) URL")
        return value


class RunOptions(_Strict):
    max_steps: int | None = Field(default=None, ge=1, le=1000)
    image_retention: int | None = Field(default=None, ge=1, le=100)
    turn_retention: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description=(
            "Anthropic only: send the task plus the newest N turns; older tool exchanges "
            "leave the request a chunk at a time, together with old screenshots, and the "
            "model is told how many are missing (follow-up inputs given in them are kept "
            "with the task). null keeps every turn. Bounds the request size of long "
            "sessions."
        ),
    )
    thinking_budget: int | None = Field(default=None, ge=1024, le=128_000)
    tool_version: str | None = None
    prompt_caching: bool | None = None

    @field_validator("tool_version")
    @classmethod
    def _tool_version(cls, value: str | None) -> str | None:
        allowed = (*ANTHROPIC_TOOL_VERSIONS, *OPENAI_TOOL_VERSIONS)
        if value is not None and value not in allowed:
            raise ValueError(f"tool_version must be one of {', '.join(allowed)}")
        return value


DOMAIN = r"^\.?([a-zA-Z0-9-]{1,63}\.)*[a-zA-Z0-9-]{1,63}$"


class SafetyOptions(_Strict):
    safety_check_timeout_s: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)
    allowed_domains: list[Annotated[str, StringConstraints(pattern=DOMAIN, max_length=253)]] = (
        Field(default_factory=list, max_length=200)
    )
    blocked_domains: list[Annotated[str, StringConstraints(pattern=DOMAIN, max_length=253)]] = (
        Field(default_factory=list, max_length=200)
    )
    require_ack_for: list[str] = Field(default_factory=list, max_length=20)

    @field_validator("require_ack_for")
    @classmethod
    def _action_types(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - ACTION_TYPES)
        if unknown:
            raise ValueError(
                f"unknown action type(s) {', '.join(unknown)}; use {', '.join(sorted(ACTION_TYPES))}"
            )
        return value


OUTPUT_SCHEMA_DESCRIPTION = (
    "A JSON Schema (at most 64 KiB serialized; local `$ref`s only) the run's answer must "
    "satisfy: the model is asked for a JSON value valid against it, which the run reports "
    "as `output_json`. An answer that does not validate is sent back to the model once "
    "with the validation errors; if it is still invalid the run fails with error type "
    "`output_invalid`."
)


def _output_schema(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None:
        check_output_schema(value)  # ValueError: a 422 naming the field
    return value


WEBHOOK_EVENT_TYPES = EVENT_TYPES | frozenset(WEBHOOK_DEFAULT_EVENTS)


class WebhookSpec(_Strict):
    """Where the session's events are POSTed, signed as Standard Webhooks do."""

    url: str = Field(
        max_length=2048,
        description="An http(s) URL whose host is public (unless the service sets "
        "WEBHOOK_ALLOW_PRIVATE); checked at create and at every delivery.",
    )
    events: list[str] = Field(
        default_factory=lambda: list(WEBHOOK_DEFAULT_EVENTS),
        min_length=1,
        max_length=len(WEBHOOK_EVENT_TYPES),
        description="The event types to deliver (default: "
        + ", ".join(WEBHOOK_DEFAULT_EVENTS)
        + ").",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        url = AnyUrl(value)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("url must be an http(s) URL with a host")
        if url.username or url.password:
            raise ValueError("url must not carry credentials (user:password@)")
        return value

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - WEBHOOK_EVENT_TYPES)
        if unknown:
            raise ValueError(f"unknown event type(s) {', '.join(unknown)}")
        return list(dict.fromkeys(value))


class SessionCreate(_Strict):
    provider: Literal["anthropic", "openai"]
    model: str | None = Field(default=None, min_length=1, max_length=200)
    task: str | None = Field(default=None, min_length=1, max_length=MAX_TEXT)
    system_prompt: str | None = Field(default=None, max_length=MAX_TEXT)
    computer: ComputerSpec = Field(default_factory=ComputerSpec)
    options: RunOptions = Field(default_factory=RunOptions)
    safety: SafetyOptions = Field(default_factory=SafetyOptions)
    metadata: dict[str, JsonValue] = Field(default_factory=dict, max_length=50)
    output_schema: dict[str, JsonValue] | None = Field(
        default=None, description=OUTPUT_SCHEMA_DESCRIPTION + " Applies to run 1: needs `task`."
    )
    webhook: WebhookSpec | None = Field(
        default=None,
        description="POST these events of the session to this URL (default: the service's "
        "DEFAULT_WEBHOOK_URL, if it has one).",
    )

    _check_output_schema = field_validator("output_schema")(_output_schema)


class RunCreate(_Strict):
    input: str = Field(min_length=1, max_length=MAX_TEXT)
    output_schema: dict[str, JsonValue] | None = Field(
        default=None, description=OUTPUT_SCHEMA_DESCRIPTION
    )

    _check_output_schema = field_validator("output_schema")(_output_schema)


class RejectBody(_Strict):
    reason: str = Field(min_length=1, max_length=10_000)


class AcknowledgeBody(_Strict):
    note: str | None = Field(default=None, max_length=10_000)


class TokenCreate(_Strict):
    scope: Literal["read", "control"] = Field(
        default="read",
        description="read: GET the session, runs, events, turns, screenshots, safety checks. "
        "control: also cancel, decide safety checks, start follow-up runs.",
    )
    ttl_s: int = Field(default=3600, ge=60, le=86400, description="Lifetime in seconds")


class SessionToken(BaseModel):
    """A session token, shown once: only its hash is stored."""

    token: str = Field(description="Send as `Authorization: Bearer` or `?access_token=`")
    scope: Literal["read", "control"]
    expires_at: datetime
    events_url: str = Field(description="Root-relative URL of the SSE stream, with the token")
    viewer_url: str = Field(description="Root-relative URL of the viewer page, with the token")


class RunError(BaseModel):
    type: str
    message: str


class LastRun(BaseModel):
    id: str
    status: str
    stop_reason: str | None


SessionStatus = Literal["idle", "running", "awaiting_safety_check", "closed"]
RunStatus = Literal[
    "queued", "running", "awaiting_safety_check", "completed", "failed", "cancelled"
]


class Session(BaseModel):
    id: str
    status: SessionStatus
    provider: str
    model: str
    computer: dict[str, Any]
    options: dict[str, Any]
    safety: dict[str, Any]
    metadata: dict[str, Any]
    webhook: WebhookSpec | None = Field(
        default=None, description="The session's own webhook (null: none named)"
    )
    active_run_id: str | None
    last_run: LastRun | None
    last_event_seq: int
    usage: Usage
    created_at: datetime
    updated_at: datetime


class Run(BaseModel):
    id: str
    session_id: str
    status: RunStatus
    input: str
    output: str | None
    output_schema: dict[str, Any] | None = Field(
        default=None, description="The JSON Schema the answer must satisfy, if one was given"
    )
    output_json: Any = Field(
        default=None,
        description="With output_schema: the answer, valid against it (completed runs)",
    )
    stop_reason: str | None
    error: RunError | None
    turns: int
    usage: Usage
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None


class Turn(BaseModel):
    id: str
    run_id: str
    index: int
    request: dict[str, Any]
    response: dict[str, Any] | None
    actions: list[Any]
    results: list[Any]
    usage: Usage
    latency_ms: int | None
    started_at: datetime
    ended_at: datetime | None


class WebhookAttempt(BaseModel):
    """One attempt to deliver one event to the session's webhook."""

    id: str = Field(description="The attempt's id (cursor of `after`)")
    webhook_id: str = Field(description="The `webhook-id` header: the same at every attempt")
    event_seq: int
    event_type: str
    attempt: int = Field(description="1 for the first attempt, then 2, 3...")
    status_code: int | None = Field(description="The receiver's HTTP status, if it answered")
    error: str | None = Field(
        description="Why the attempt failed without a status (timeout, connection, refused "
        "address), or that a redirect was not followed"
    )
    outcome: Literal["in_flight", "delivered", "retrying", "failed", "interrupted"] = Field(
        description="delivered (2xx); retrying (failed, another attempt follows); failed "
        "(the last attempt failed: given up); interrupted (its replica stopped first: the "
        "next attempt follows); in_flight"
    )
    started_at: datetime
    ended_at: datetime | None


class Page(BaseModel, Generic[T]):
    data: list[T]
    next_after: str | None
    has_more: bool


class EventPage(BaseModel):
    """A page of the event log: events with seq > the cursor, in order."""

    data: list[Event]
    next_after: int
    has_more: bool


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[dict[str, Any]] | None = None


class Health(BaseModel):
    status: str
    detail: str | None = None
    replica: str | None = Field(
        default=None,
        description="/readyz: the id of the replica that answered (REPLICA_ID); null on /healthz.",
    )
