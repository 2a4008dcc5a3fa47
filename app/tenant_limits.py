"""TENANT_REQUESTS_PER_S (SPEC v2.3): how many requests one tenant may make per second,
for the whole deployment.

A fixed one-second window per tenant. On Postgres, where replicas share nothing but
the database, the window is a row (`tenant_request_counts`, one per tenant) that
every request of the tenant upserts, by the database's clock, in one statement: the
replicas count together. SQLite serves one process, which counts in memory. Over
the limit, the request gets 429 with `Retry-After: 1` (the window ends within a
second). Unset (the default), nothing is counted and nothing is written.

The count happens when the caller is identified (app/deps.py `get_principal`), once
per request, refused requests included: a client that keeps hammering stays limited.
A database that cannot count lets the request through (logged): the limiter never
turns a database hiccup into refusals of its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import repositories as repo
from app.settings import Settings

log = logging.getLogger(__name__)

# Seconds until the current window ends, at most: a whole number, as the header wants.
RETRY_AFTER_S = 1


class TenantRequestLimiter:
    """Counts each tenant's requests in one-second windows; `admit` says whether one more
    fits. `shared`: count in the database (Postgres replicas), else in this process."""

    def __init__(
        self,
        per_second: int | None,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        shared: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.per_second = per_second
        self._sessionmaker = sessionmaker
        self._shared = shared
        self._clock = clock
        # In-process windows (SQLite): tenant -> (window start in whole seconds, count).
        # Bounded by the number of tenants, which API_KEYS (or the tokens' sessions) name.
        self._windows: dict[str, tuple[int, int]] = {}

    @classmethod
    def from_settings(
        cls, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
    ) -> TenantRequestLimiter:
        return cls(settings.tenant_requests_per_s, sessionmaker, shared=not settings.is_sqlite)

    async def admit(self, tenant: str) -> bool:
        """Count one request of `tenant`; False when it is over the limit."""
        if self.per_second is None:
            return True
        if not self._shared:
            return self._count_here(tenant) <= self.per_second
        try:
            async with self._sessionmaker() as db, db.begin():
                count = await repo.count_tenant_request(db, tenant)
        except Exception as exc:  # the database is away: let the request through
            log.warning("could not count a request of tenant %s: %r", tenant, exc)
            return True
        return count <= self.per_second

    def _count_here(self, tenant: str) -> int:
        window = int(self._clock())
        start, count = self._windows.get(tenant, (window, 0))
        count = count + 1 if start >= window else 1
        self._windows[tenant] = (max(start, window), count)
        return count
