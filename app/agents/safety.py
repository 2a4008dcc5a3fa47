"""Safety checks: the service's own policy checks, and the durable wait for a human.

Checks live in the database (safety_checks rows); a waiting run holds only an
in-memory wake-up (`SafetyGate`), so a restart loses nothing: the resumed loop
asks for the same call's checks again and finds the rows. Decisions arrive
through REST, are committed with their events, then wake the run.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from app.agents.base import CheckRequest
from app.computers.domains import domain_matches, host_of

# Actions that change nothing on the page raise no domain check.
PASSIVE_ACTIONS = frozenset({"screenshot", "wait", "cursor_position", "zoom"})
ACTION_TYPES = frozenset(
    {
        "click",
        "mouse_down",
        "mouse_up",
        "move",
        "drag",
        "scroll",
        "type",
        "key",
        "hold_key",
        "wait",
        "screenshot",
        "zoom",
        "cursor_position",
    }
)


def policy_checks(
    safety: dict[str, Any], action: dict[str, Any], page_url: str | None
) -> list[CheckRequest]:
    """The checks SPEC.md's policy raises for `action` on `page_url` (pure)."""
    checks: list[CheckRequest] = []
    kind = str(action.get("type", ""))
    if kind in (safety.get("require_ack_for") or []):
        checks.append(
            CheckRequest(
                "action_requires_ack",
                f"The session's policy requires acknowledgment for {kind} actions.",
            )
        )
    if kind in PASSIVE_ACTIONS:
        return checks
    host = host_of(page_url)
    allowed = safety.get("allowed_domains") or []
    blocked = safety.get("blocked_domains") or []
    if host is not None and (
        (allowed and not domain_matches(host, allowed))
        or (blocked and domain_matches(host, blocked))
    ):
        checks.append(
            CheckRequest(
                "domain_not_allowed",
                f"The page {page_url} is outside the session's allowed domains.",
            )
        )
    return checks


class SafetyGate:
    """run id -> waiters, woken when a decision about one of its checks is committed."""

    def __init__(self) -> None:
        self._events: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

    def event(self, run_id: str) -> asyncio.Event:
        return self._events[run_id]

    def notify(self, run_id: str) -> None:
        event = self._events.get(run_id)
        if event is not None:
            event.set()

    def forget(self, run_id: str) -> None:
        self._events.pop(run_id, None)


def check_event_data(row: Any) -> dict[str, Any]:
    """The data of safety_check.* events: the check as the REST API shows it."""
    return {
        "id": row.id,
        "provider_check_id": row.provider_check_id,
        "code": row.code,
        "message": row.message,
        "run_id": row.run_id,
        "call_id": row.call_id,
        "action": row.action,
        "status": row.status,
        "expires_at": row.expires_at.isoformat().replace("+00:00", "Z") if row.expires_at else None,
        "decided_at": row.decided_at.isoformat().replace("+00:00", "Z") if row.decided_at else None,
        "reason": row.reason,
        "decided_by": row.decided_by,
    }
