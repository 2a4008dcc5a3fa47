"""Retention (SPEC v2.3): what the service deletes, and when.

- `RETENTION_DAYS`: a closed session unchanged for that long is purged with
  everything it owns (events, runs, turns, screenshots, safety checks, tokens,
  webhook deliveries, the answers kept for its idempotency keys); unset keeps
  everything forever.
- `DELETE /v1/sessions/{sid}?purge=true` closes the session and purges it at once
  (`purge_session`).
- Expired idempotency keys are deleted.

`Purger` does the periodic part every `PURGE_INTERVAL_S` on every replica: sessions
are taken in batches, each locked with SKIP LOCKED, so replicas purging at the same
moment take different sessions. Deletes go through the event log's writer like every
other write, in batches small enough not to hold it long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.db import repositories as repo
from app.db.models import utcnow
from app.events.log import EventLog
from app.settings import Settings

log = logging.getLogger(__name__)

# Sessions per transaction: one session can own thousands of events and screenshots.
PURGE_BATCH = 10


async def purge_session(event_log: EventLog, session_id: str) -> bool:
    """Delete a closed session and everything it owns; False if it is not closed (or
    not there)."""

    async def purge(db: AsyncSession) -> bool:
        row = await repo.lock_session(db, session_id)
        if row is None or row.status != "closed":
            return False
        await repo.delete_sessions(db, [session_id])
        return True

    _, purged = await event_log.transact(session_id, None, (), purge)
    event_log.forget(session_id)
    return bool(purged)


async def purge_closed_sessions(
    event_log: EventLog, older_than: timedelta, batch: int = PURGE_BATCH
) -> int:
    """Purge the closed sessions last changed more than `older_than` ago; how many."""
    cutoff = utcnow() - older_than

    async def purge(db: AsyncSession) -> list[str]:
        ids = await repo.lock_purgeable_sessions(db, cutoff, batch)
        await repo.delete_sessions(db, ids)
        return ids

    total = 0
    while True:
        _, ids = await event_log.transact("", None, (), purge)
        for session_id in ids:
            event_log.forget(session_id)
        total += len(ids)
        if len(ids) < batch:
            return total


async def purge_expired_keys(event_log: EventLog) -> int:
    async def purge(db: AsyncSession) -> int:
        return await repo.purge_expired_idempotency_keys(db, utcnow())

    _, count = await event_log.transact("", None, (), purge)
    return int(count)


class Purger:
    """The periodic purge: at start-up, then every `PURGE_INTERVAL_S`."""

    def __init__(self, settings: Settings, event_log: EventLog) -> None:
        self._settings = settings
        self._log = event_log
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._purge_forever(), name="purger")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def purge_once(self) -> tuple[int, int]:
        """(expired idempotency keys, sessions) deleted."""
        keys = await purge_expired_keys(self._log)
        sessions = 0
        if self._settings.retention_days is not None:
            older_than = timedelta(days=self._settings.retention_days)
            sessions = await purge_closed_sessions(self._log, older_than)
        return keys, sessions

    async def _purge_forever(self) -> None:
        while True:
            try:
                keys, sessions = await self.purge_once()
                if keys or sessions:
                    log.info("purged %d expired idempotency keys, %d sessions", keys, sessions)
            except Exception:  # the database is away, say: try again next time
                log.warning("purge failed", exc_info=True)
            await asyncio.sleep(self._settings.purge_interval_s)
