"""This replica's run leases: claiming work, renewing, releasing, noticing a loss.

A run is executed only by the replica holding its lease (SPEC v2.1). The keeper
claims runs with row locks that skip what another replica is claiming, renews
every lease it holds in one statement every `LEASE_RENEW_S`, and reports a run
whose lease it no longer holds (another replica claimed it after this process
stalled) so the runner stops that run locally without another write or action.
The event log's fence (app/events/log.py) makes every write of the run prove
the lease in its own transaction; `FencedComputer` keeps an action from starting
when the lease could lapse before it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.computers.base import Action, ActionResult, Computer, ShotImage
from app.db import repositories as repo
from app.db.lease import Lease
from app.events.log import LeaseLost

log = logging.getLogger(__name__)


class LeaseKeeper:
    """The leases of one replica (`owner`)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        owner: str,
        ttl_s: float,
        renew_s: float,
        *,
        on_lost: Callable[[Lease], None],
        on_cancel_requested: Callable[[str, str], None],
        tenant_limit: int | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self.owner = owner
        self.ttl_s = ttl_s
        self.renew_s = renew_s
        self._on_lost = on_lost
        self._on_cancel_requested = on_cancel_requested
        # TENANT_MAX_ACTIVE_RUNS: claims skip the queued runs of tenants at the limit.
        self.tenant_limit = tenant_limit
        self._held: dict[str, Lease] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def action_margin_s(self) -> float:
        """The longest an action is assumed to take: one that could outlast the lease
        does not start without a fresh renewal."""
        return self.ttl_s / 2

    def get(self, run_id: str) -> Lease | None:
        return self._held.get(run_id)

    @property
    def held_count(self) -> int:
        """How many run leases this replica holds (agent_sessions_leases_held)."""
        return len(self._held)

    async def claim(
        self, limit: int, *, own_past: bool = False, running_here: Sequence[str] = ()
    ) -> list[tuple[repo.ClaimedRun, Lease]]:
        if limit <= 0:
            return []
        sent = time.monotonic()
        async with self._sessionmaker() as db, db.begin():
            claimed = await repo.claim_runs(
                db,
                self.owner,
                limit,
                self.ttl_s,
                own_past=own_past,
                running_here=running_here,
                tenant_limit=self.tenant_limit,
            )
        out = []
        for run in claimed:
            lease = Lease(run.run_id, run.session_id, self.owner, run.epoch, self.ttl_s, sent)
            self._held[run.run_id] = lease
            out.append((run, lease))
        return out

    def forget(self, lease: Lease) -> None:
        if self._held.get(lease.run_id) is lease:
            del self._held[lease.run_id]

    async def release(self, lease: Lease) -> None:
        """Give the run up now (hand-off): another replica may claim it at once."""
        self.forget(lease)
        if lease.lost:
            return
        async with self._sessionmaker() as db, db.begin():
            await repo.release_lease(db, self.owner, lease.run_id, lease.epoch)

    async def renew(self, leases: list[Lease] | None = None) -> None:
        """Renew `leases` (default: all held) in one statement; report the lost ones."""
        leases = list(self._held.values()) if leases is None else leases
        leases = [lease for lease in leases if not lease.lost]
        if not leases:
            return
        sent = time.monotonic()
        async with self._sessionmaker() as db, db.begin():
            held = await repo.renew_leases(
                db, self.owner, [(lease.run_id, lease.epoch) for lease in leases], self.ttl_s
            )
        for lease in leases:
            if lease.run_id not in held:
                lease.lost = True
                if self._held.get(lease.run_id) is lease:
                    del self._held[lease.run_id]
                    log.warning("lost the lease of run %s (epoch %d)", lease.run_id, lease.epoch)
                    self._on_lost(lease)
                continue
            lease.renewed(sent)
            reason = held[lease.run_id]
            if reason is not None:
                self._on_cancel_requested(lease.run_id, reason)

    async def renew_one(self, lease: Lease) -> None:
        """Renew `lease` now; LeaseLost when another replica holds the run, or when the
        database cannot say (the run then stops here, and is claimed again, by this
        replica or another, once the lease lapses)."""
        try:
            await self.renew([lease])
        except Exception as exc:
            raise LeaseLost(f"the lease of run {lease.run_id} could not be renewed") from exc
        if lease.lost:
            raise LeaseLost(f"the lease of run {lease.run_id} was lost")

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._renew_forever(), name="lease-renewal")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.renew_s)
            try:
                await self.renew()
            except Exception as exc:  # the database is away: the local deadlines stand
                log.warning("lease renewal failed: %r", exc)


class FencedComputer:
    """The run's computer, which starts an action only while the run's lease cannot
    lapse before the action ends; otherwise it renews first, and a lost lease stops
    the run (LeaseLost) before anything is executed."""

    def __init__(self, computer: Computer, lease: Lease, keeper: LeaseKeeper) -> None:
        self._computer = computer
        self._lease = lease
        self._keeper = keeper
        self.display = computer.display
        self.acting = False  # an action is under way (shutdown lets it end)

    async def start(self) -> None:
        await self._computer.start()

    async def screenshot(self) -> ShotImage:
        return await self._computer.screenshot()

    async def current_url(self) -> str | None:
        return await self._computer.current_url()

    async def close(self) -> None:
        await self._computer.close()

    def is_alive(self) -> bool:
        return self._computer.is_alive()

    async def execute(self, action: Action) -> ActionResult:
        if not self._lease.may_act(self._keeper.action_margin_s):
            await self._keeper.renew_one(self._lease)
            if not self._lease.may_act(self._keeper.action_margin_s):
                raise LeaseLost(f"the lease of run {self._lease.run_id} cannot cover an action")
        self.acting = True
        try:
            return await self._computer.execute(action)
        finally:
            self.acting = False
