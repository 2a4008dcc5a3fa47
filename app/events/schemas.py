"""The wire shape of every event: one model per event type, with its `data`.

`Event` is a union discriminated by `type`; it is what an SSE `data:` line and
each item of an EventPage carry, and it is documented in openapi/openapi.json
from these models. The shapes are read off the emitters (api/sessions.py,
api/safety_checks.py, agents/runner.py, agents/context.py, agents/safety.py,
agents/retry.py, agents/anthropic_events.py, agents/openai_events.py);
tests/events/test_event_schemas.py validates real emitted events against them,
so the two cannot drift apart silently.

The models are open (unknown fields are ignored, not rejected) so that adding a
field later does not break a client that validates strictly.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, TypeAdapter

from app.computers.base import Action

StopReason = Literal[
    "end_turn",
    "max_steps",
    "time_limit",
    "refusal",
    "cancelled",
    "safety_check_rejected",
    "safety_check_timeout",
    "error",
]


class _Data(BaseModel):
    model_config = ConfigDict(frozen=True)


class Usage(_Data):
    """Token counts. A key the provider did not report counts as 0."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0


# ---- session lifecycle ---------------------------------------------------------------


class DisplayData(_Data):
    width: int
    height: int


class ComputerData(_Data):
    """The session's computer as it was requested (fields left out are absent)."""

    type: Literal["browser", "cdp", "kernel", "fake"]
    display: DisplayData
    start_url: str | None = None
    cdp_url: str | None = None


class SessionCreatedData(_Data):
    provider: Literal["anthropic", "openai"]
    model: str
    computer: ComputerData
    metadata: dict[str, Any]


class SessionClosedData(_Data):
    """No fields: the session is closed; its history is kept."""


# ---- run lifecycle ------------------------------------------------------------------------


class RunQueuedData(_Data):
    run_id: str
    input: str


class RunStartedData(_Data):
    input: str
    replica: str | None = Field(default=None, description="The replica that executes the run")


class RunResumedData(_Data):
    """`restart`: a new process (or the same replica restarted) picked the run up from
    its last checkpoint; `takeover`: another replica did, after the owner's lease
    lapsed; `handoff`: another replica did, after a draining owner released it;
    `safety_check_acknowledged`: every check of the tool call `call_id` was acknowledged."""

    reason: Literal["restart", "takeover", "handoff", "safety_check_acknowledged"]
    call_id: str | None = Field(default=None, description="With safety_check_acknowledged")
    replica: str | None = Field(
        default=None, description="The replica that executes the run from here on"
    )


class RunAwaitingSafetyCheckData(_Data):
    """The tool call `call_id` waits for a human's decision on these pending checks."""

    call_id: str
    check_ids: list[str]
    expires_at: datetime | None = Field(description="When the first of them expires")


class RunErrorDetail(_Data):
    """Why a run failed. `status_code` is the provider's HTTP status, for provider errors."""

    type: str
    message: str
    status_code: int | None = None


class ExecutedAction(_Data):
    """The last action that ran: its tool call id and normalized action."""

    call_id: str
    action: Action | None


class _RunEndedData(_Data):
    stop_reason: StopReason
    output: str | None = Field(description="The model's final text (completed runs)")
    error: RunErrorDetail | None
    usage: Usage = Field(description="The run's usage so far; {} when no turn was recorded")


class RunCompletedData(_RunEndedData):
    status: Literal["completed"]
    output_json: Any = Field(
        default=None,
        description="With the run's output_schema: the answer, valid against it (SPEC v2.3)",
    )


class RunFailedData(_RunEndedData):
    status: Literal["failed"]


class RunCancelledData(_RunEndedData):
    status: Literal["cancelled"]
    last_action_executed: ExecutedAction | None


# ---- turns and model output -----------------------------------------------------------


class TurnStartedData(_Data):
    turn: int = Field(description="0-based index of the model call within the run")
    model: str


class TurnCompletedData(_Data):
    turn: int
    usage: Usage
    latency_ms: int
    stop_reason: str | None = Field(
        description="Anthropic: the response's stop_reason. OpenAI: `refusal`, an incomplete "
        "response's reason, or the response's status"
    )


class AssistantMessageData(_Data):
    text: str


class AssistantThinkingData(_Data):
    """Thinking text; `text` is null and `redacted` true for redacted thinking."""

    text: str | None
    redacted: bool = False


# ---- tool calls ---------------------------------------------------------------------------


class ToolCallData(_Data):
    call_id: str
    tool: str = Field(
        description="The tool as the provider named it: Anthropic's tool_use name (`computer`, "
        "or the action for the GA toolset); OpenAI's tool type"
    )
    action: Action | None = Field(
        description="The normalized action; null when the input could not be translated"
    )
    input: dict[str, Any] = Field(description="The provider's raw tool input")


class ScreenshotRef(_Data):
    """A stored screenshot, by reference; `data_url` only with `?include_images=true`."""

    id: str
    url: str = Field(description="/v1/sessions/{sid}/screenshots/{id}")
    width: int
    height: int
    media_type: str
    page_url: str | None
    data_url: str | None = None


class ToolResultData(_Data):
    call_id: str
    is_error: bool
    output: str | None
    error: str | None
    screenshot: ScreenshotRef | None
    duration_ms: int
    not_executed: bool = Field(
        description="True when the action was skipped (bad input, an earlier failure)"
    )


# ---- safety checks and retries -------------------------------------------------------------


class SafetyCheck(_Data):
    """A check that blocks one tool call until a human decides. The REST resource, and the
    data of every safety_check.* event (the check as it is once the event is committed)."""

    id: str
    provider_check_id: str | None = Field(description="OpenAI's id; null for policy checks")
    code: str
    message: str
    run_id: str
    call_id: str
    action: dict[str, Any] | None = Field(
        description="The normalized action under review (an OpenAI batch: "
        '{"type": "batch", "actions": [...]})'
    )
    status: Literal["pending", "acknowledged", "rejected", "expired"]
    expires_at: datetime | None
    decided_at: datetime | None
    reason: str | None
    decided_by: str | None = Field(
        default=None,
        description='Who decided: the API key\'s tenant, or "token:<token id>" for a session '
        "token; null while pending and when it expired",
    )


class ProviderRetryData(_Data):
    attempt: int = Field(ge=1)
    status_code: int | None = Field(description="null for timeouts and connection errors")
    wait_s: float
    error: str


# ---- the envelopes ---------------------------------------------------------------------------


class _Envelope(BaseModel):
    seq: int = Field(ge=1, description="Per-session sequence number, gapless from 1")
    session_id: str
    run_id: str | None
    created_at: datetime


class SessionCreatedEvent(_Envelope):
    type: Literal["session.created"]
    data: SessionCreatedData


class SessionClosedEvent(_Envelope):
    type: Literal["session.closed"]
    data: SessionClosedData


class RunQueuedEvent(_Envelope):
    type: Literal["run.queued"]
    data: RunQueuedData


class RunStartedEvent(_Envelope):
    type: Literal["run.started"]
    data: RunStartedData


class RunAwaitingSafetyCheckEvent(_Envelope):
    type: Literal["run.awaiting_safety_check"]
    data: RunAwaitingSafetyCheckData


class RunResumedEvent(_Envelope):
    type: Literal["run.resumed"]
    data: RunResumedData


class RunCompletedEvent(_Envelope):
    type: Literal["run.completed"]
    data: RunCompletedData


class RunFailedEvent(_Envelope):
    type: Literal["run.failed"]
    data: RunFailedData


class RunCancelledEvent(_Envelope):
    type: Literal["run.cancelled"]
    data: RunCancelledData


class TurnStartedEvent(_Envelope):
    type: Literal["turn.started"]
    data: TurnStartedData


class TurnCompletedEvent(_Envelope):
    type: Literal["turn.completed"]
    data: TurnCompletedData


class AssistantMessageEvent(_Envelope):
    type: Literal["assistant.message"]
    data: AssistantMessageData


class AssistantThinkingEvent(_Envelope):
    type: Literal["assistant.thinking"]
    data: AssistantThinkingData


class ToolCallEvent(_Envelope):
    type: Literal["tool.call"]
    data: ToolCallData


class ToolResultEvent(_Envelope):
    type: Literal["tool.result"]
    data: ToolResultData


class SafetyCheckPendingEvent(_Envelope):
    type: Literal["safety_check.pending"]
    data: SafetyCheck


class SafetyCheckAcknowledgedEvent(_Envelope):
    type: Literal["safety_check.acknowledged"]
    data: SafetyCheck


class SafetyCheckRejectedEvent(_Envelope):
    type: Literal["safety_check.rejected"]
    data: SafetyCheck


class SafetyCheckExpiredEvent(_Envelope):
    type: Literal["safety_check.expired"]
    data: SafetyCheck


class ProviderRetryEvent(_Envelope):
    type: Literal["provider.retry"]
    data: ProviderRetryData


AnyEvent = Annotated[
    SessionCreatedEvent
    | SessionClosedEvent
    | RunQueuedEvent
    | RunStartedEvent
    | RunAwaitingSafetyCheckEvent
    | RunResumedEvent
    | RunCompletedEvent
    | RunFailedEvent
    | RunCancelledEvent
    | TurnStartedEvent
    | TurnCompletedEvent
    | AssistantMessageEvent
    | AssistantThinkingEvent
    | ToolCallEvent
    | ToolResultEvent
    | SafetyCheckPendingEvent
    | SafetyCheckAcknowledgedEvent
    | SafetyCheckRejectedEvent
    | SafetyCheckExpiredEvent
    | ProviderRetryEvent,
    Field(discriminator="type"),
]


class Event(RootModel[AnyEvent]):
    """One entry of a session's event log; `type` says which `data` it carries."""


EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
