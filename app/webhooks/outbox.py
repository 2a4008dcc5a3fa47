"""Which events go to which webhook: the outbox rows the event log inserts in the very
transaction that inserts the events (so an event is committed with its delivery, or
neither is).

A session's webhook never changes after create, so its target is read once per
process (or handed over by the create request) and kept: a session without one costs
the event log a dict lookup per write, and no statement.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.db import webhooks as db_webhooks
from app.db.models import utcnow
from app.events.types import StoredEvent
from app.ids import new_id

DEFAULT_EVENTS: tuple[str, ...] = (
    "run.completed",
    "run.failed",
    "run.cancelled",
    "run.paused",
    "run.awaiting_safety_check",
    "safety_check.pending",
)


@dataclass(frozen=True)
class Target:
    """Where a session's matching events are delivered, and for which tenant's secret."""

    tenant: str
    url: str
    events: frozenset[str]


class Outbox:
    """The event log's view of webhooks: the target of each session, cached, and the
    rows to insert for a write's events. `on_commit` is called after a commit that
    added rows (the delivery worker's wake-up)."""

    def __init__(self, default_url: str | None = None) -> None:
        self._default_url = default_url
        self._targets: dict[str, Target | None] = {}
        self.on_commit: Callable[[], None] | None = None

    def target_for(self, tenant: str, webhook: dict[str, Any] | None) -> Target | None:
        """The session's own webhook, else DEFAULT_WEBHOOK_URL with the default events."""
        if webhook:
            events = webhook.get("events") or DEFAULT_EVENTS
            return Target(tenant, str(webhook["url"]), frozenset(events))
        if self._default_url:
            return Target(tenant, self._default_url, frozenset(DEFAULT_EVENTS))
        return None

    def remember(self, session_id: str, tenant: str, webhook: dict[str, Any] | None) -> None:
        """Cache a new session's target (its create request knows it: no read needed)."""
        self._targets[session_id] = self.target_for(tenant, webhook)

    def forget(self, session_id: str) -> None:
        self._targets.pop(session_id, None)

    def quiet(self, session_id: str, types: Iterable[str]) -> bool:
        """Whether these events of the session surely need no outbox row (its target is
        known and matches none of them)."""
        if session_id not in self._targets:
            return False
        target = self._targets[session_id]
        return target is None or target.events.isdisjoint(types)

    async def rows_for(
        self, db: AsyncSession, session_id: str, events: Sequence[StoredEvent]
    ) -> list[dict[str, Any]]:
        """Outbox rows for those of `events` the session's webhook asks for."""
        if session_id in self._targets:
            target = self._targets[session_id]
        else:
            found = await db_webhooks.session_webhook(db, session_id)
            target = None if found is None else self.target_for(*found)
            self._targets[session_id] = target
        if target is None:
            return []
        now = utcnow()
        return [
            {
                "id": new_id("msg"),
                "session_id": session_id,
                "event_seq": event.seq,
                "event_type": event.type,
                "tenant": target.tenant,
                "url": target.url,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for event in events
            if event.type in target.events
        ]

    def committed(self) -> None:
        if self.on_commit is not None:
            self.on_commit()
