"""Event types of the session log and the stored-event value the log hands out.

The documented wire shape of each type (its `data` model) is in events/schemas.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

EventType = Literal[
    "session.created",
    "session.closed",
    "run.queued",
    "run.started",
    "run.awaiting_safety_check",
    "run.resumed",
    "run.completed",
    "run.failed",
    "run.cancelled",
    "turn.started",
    "turn.completed",
    "assistant.message",
    "assistant.thinking",
    "tool.call",
    "tool.result",
    "safety_check.pending",
    "safety_check.acknowledged",
    "safety_check.rejected",
    "safety_check.expired",
    "provider.retry",
]

EVENT_TYPES: frozenset[str] = frozenset(EventType.__args__)  # type: ignore[attr-defined]
TERMINAL_RUN_EVENTS: frozenset[str] = frozenset({"run.completed", "run.failed", "run.cancelled"})


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One committed entry of a session's event log."""

    session_id: str
    seq: int
    run_id: str | None
    type: str
    data: dict[str, Any]
    created_at: datetime
    # The SSE frame, encoded once for every subscriber (events/sse.py: sse_frame).
    frame: bytes | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The wire form: what SSE `data:` lines and JSON pages carry."""
        return {
            "seq": self.seq,
            "type": self.type,
            "session_id": self.session_id,
            "run_id": self.run_id,
            "created_at": self.created_at.isoformat().replace("+00:00", "Z"),
            "data": self.data,
        }

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_RUN_EVENTS
