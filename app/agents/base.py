"""The contract between the runner and a provider loop.

A loop (agents/anthropic.py, agents/openai.py) is a flat `while` loop: call the
model, record the turn, run the tool calls, repeat. It talks to the rest of the
service only through the `RunContext` it is handed: it never sees SSE, HTTP or
SQL. The runner owns the run's lifecycle (started, cancelled, failed, the
terminal events); the loop owns the transcript, kept in a JSON-able `state`
dict that it checkpoints at step boundaries so a restarted process can resume.
"""

from __future__ import annotations

import pickle
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

from app.computers.base import Computer, Display, ShotImage

T = TypeVar("T")

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


def snapshot(state: dict[str, Any]) -> dict[str, Any]:
    """An independent copy of a loop state (plain JSON data) for a checkpoint: the
    context keeps it while the loop goes on changing its own. A pickle round trip
    gives the same result as copy.deepcopy for such data at about a quarter of the
    cost (0.72 ms against 2.7 ms for a 200-step transcript), which matters at
    three checkpoints a step."""
    return pickle.loads(pickle.dumps(state, pickle.HIGHEST_PROTOCOL))


@dataclass(frozen=True)
class RunConfig:
    """Everything a loop needs to know about its session and run (read-only)."""

    session_id: str
    run_id: str
    provider: str
    model: str
    system_prompt: str | None
    computer_type: str
    display: Display
    max_steps: int
    image_retention: int
    thinking_budget: int | None
    tool_version: str | None
    prompt_caching: bool
    max_tokens: int
    safety: dict[str, Any] = field(default_factory=dict)
    turn_retention: int | None = None  # None: every turn is sent
    # The run's JSON Schema for its answer (SPEC v2.3 structured output), or None.
    output_schema: dict[str, Any] | None = None


@dataclass(frozen=True)
class StoredShot:
    """A persisted screenshot as events reference it (SPEC.md screenshot object)."""

    id: str
    session_id: str
    width: int
    height: int
    media_type: str
    page_url: str | None

    @property
    def url(self) -> str:
        return f"/v1/sessions/{self.session_id}/screenshots/{self.id}"

    def to_event(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "width": self.width,
            "height": self.height,
            "media_type": self.media_type,
            "page_url": self.page_url,
        }


@dataclass
class TurnRecord:
    """One model call and the actions it asked for, as persisted in the turns table."""

    index: int
    request: dict[str, Any]
    response: dict[str, Any] | None
    usage: dict[str, int]
    latency_ms: int
    actions: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class RunOutcome:
    """How a loop ended on its own (cancellation and errors are exceptions)."""

    stop_reason: StopReason
    output: str | None = None
    # With an output_schema: the answer, parsed and valid against it.
    output_json: Any = None


class RunLimitExceeded(Exception):
    """Raised by a loop when the run hits max_steps."""

    def __init__(self, stop_reason: StopReason, message: str) -> None:
        super().__init__(message)
        self.stop_reason = stop_reason


class ProviderError(Exception):
    """The provider failed and retries are spent (or the error is not retryable)."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        type_: str = "provider_error",
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.type = type_
        # The provider's machine-readable error code (OpenAI's `code`), when it sent one.
        self.code = code


Event = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class CheckRequest:
    """One check that must be acknowledged before a tool call runs: a provider's
    pending safety check (with its id) or one of the service's policy checks."""

    code: str
    message: str
    provider_check_id: str | None = None


@dataclass(frozen=True)
class SafetyDecision:
    """The human's answer to every check of one tool call."""

    approved: bool
    # The acknowledged checks, as the provider must receive them back.
    acknowledged: tuple[CheckRequest, ...] = ()
    # When not approved: safety_check_rejected or safety_check_timeout.
    stop_reason: StopReason | None = None
    reason: str | None = None


class RunHalted(Exception):
    """Raised by a loop to end the run `cancelled` with `stop_reason` (a rejected or
    expired safety check). The loop has checkpointed a state valid for a follow-up run."""

    def __init__(self, stop_reason: StopReason, message: str) -> None:
        super().__init__(message)
        self.stop_reason = stop_reason


class RunContext(Protocol):
    """What the runner hands a loop. Every method commits before it returns (except
    a deferred checkpoint, and the staged turn records and screenshots)."""

    config: RunConfig
    computer: Computer

    async def emit(self, type_: str, data: dict[str, Any]) -> int:
        """Append one event to the session's log (committed, then published); returns its seq."""
        ...

    async def checkpoint(
        self, state: dict[str, Any], events: Sequence[Event] = (), *, defer: bool = False
    ) -> None:
        """Save the loop's resumable state and append `events`, in one transaction.

        `defer`: the write may wait for the context's next one and commit in its
        transaction, ahead of it. Only for a checkpoint the loop follows with
        another write before it acts outside the process (calls the model, runs an
        action); the runner commits a deferred checkpoint before the run ends."""
        ...

    async def record_turn(self, turn: TurnRecord) -> None:
        """Persist (insert or update) a turn row and add its usage to the run and session."""
        ...

    def note_executed(self, call_id: str, action: dict[str, Any] | None) -> None:
        """Call right after the computer finished an action (before its screenshot and
        tool.result), so a cancel in between still reports it as last_action_executed."""
        ...

    async def store_screenshot(self, image: ShotImage, page_url: str | None) -> StoredShot: ...

    async def load_screenshot(self, shot_id: str) -> ShotImage: ...

    async def call_provider(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run one provider request with the service's retry policy (provider.retry events)."""
        ...

    async def policy_checks(self, action: dict[str, Any]) -> list[CheckRequest]:
        """The service's own checks (SPEC.md policy checks) that `action` (a normalized
        action as JSON) raises on the computer's current page; [] when it may run."""
        ...

    async def await_safety(
        self,
        call_id: str,
        action: dict[str, Any] | None,
        checks: Sequence[CheckRequest],
        state: dict[str, Any],
    ) -> SafetyDecision:
        """Block the tool call `call_id` until a human decides every check.

        Persists the checks (once per call: calling again after a restart finds them),
        the loop's `state` (which must show that the call waits), and the events
        `safety_check.pending` and `run.awaiting_safety_check`, in one transaction;
        then waits without holding anything a restart would lose. Returns when every
        check is acknowledged (approved), one is rejected, or they expire.
        """
        ...


class AgentLoop(Protocol):
    """A provider loop. `state` is what it last checkpointed ({} for a new session)."""

    async def run(
        self, ctx: RunContext, state: dict[str, Any], user_input: str | None, *, resumed: bool
    ) -> RunOutcome:
        """Drive the model until it stops. On resume (`resumed=True`) `user_input` is the
        run's input again; the loop uses it only if its state does not show the run yet."""
        ...

    def repair(self, state: dict[str, Any], reason: str) -> dict[str, Any]:
        """Return `state` with every unanswered tool call answered (is_error, `reason`),
        so the next request to the provider is valid. Used after a cancel or a crash."""
        ...
