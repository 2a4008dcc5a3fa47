"""The append-only, per-session event log: assign seq, persist, then publish.

Every write of the service's state goes through one writer task (group
commit): appends queued while a transaction is in flight are committed
together in the next one, so thousands of events per second cost a handful of
commits instead of one each, and SQLite never sees two writers contend. A
write carries its events and an optional `apply` callback that changes state
(a run's status, a session row) in the same transaction, so when a client
sees an event, REST already shows its effect. The webhook deliveries of a write's
events (app/webhooks/outbox.py) are inserted in that transaction too.

`seq` is gapless per session: it is assigned inside the transaction from the
last committed value, and a failed write gives its numbers back. Several
processes may append to one session (replicas on Postgres: a decision on one
while another runs the session): the unique (session_id, seq) index is the
arbiter. A writer whose cached seq is stale collides with the committed row,
re-reads the newest seq and tries again; a seq can only be taken once the one
below it has committed, so no reader ever sees a higher seq before a lower one.

A write of a run's state or events made by the run's owner carries its `Lease`:
the same transaction renews the lease at that owner and epoch (a conditional
UPDATE of the run's row, which also locks it against a concurrent claim), and
when another replica has claimed the run since, the write is refused with
`LeaseLost` and the lease is marked lost (fencing).

On Postgres with `notify_channel` set, every transaction that adds events sends
one NOTIFY per session, "<session id> <first seq> <last seq> <origin>" (never an event),
delivered at commit, for the other replicas' LISTEN bridge (app/events/bridge.py),
while the bridge reports that another replica listens.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import repositories as repo
from app.db import webhooks as db_webhooks
from app.db.engine import is_sqlite_busy
from app.db.lease import Lease
from app.db.models import utcnow
from app.events.broker import Broker
from app.events.types import EVENT_TYPES, StoredEvent
from app.webhooks.outbox import Outbox

log = logging.getLogger(__name__)

# A batch of at most this many writes goes through the `inline` sessionmaker when
# there is one (SQLite: statements on the loop's thread, no hop to a connection
# thread per call). A larger batch means a busy service: its statements run on the
# connection's thread, where SQLite's own work overlaps the loop's on another core.
INLINE_MAX_WRITES = 8
# The longest the writer runs between two turns of the event loop while it builds
# a batch's transaction.
SLICE_S = 0.005
# How often a write whose seq another process took is tried again (each time with
# the newest seq re-read, after a random pause that grows with each try, so that two
# writers hammering one session fall out of step): replicas appending to one session
# at the same moment.
SEQ_CONFLICT_TRIES = 32
SEQ_CONFLICT_PAUSE_S = 0.002

Apply = Callable[[AsyncSession], Awaitable[Any]]
NewEvent = tuple[str, dict[str, Any]]
# Events may depend on what `apply` found (e.g. nothing to announce if a run already ended).
EventsFor = Callable[[Any], Sequence[NewEvent]]


class CommitObserver(Protocol):
    """Told of every committed batch (app/observability): how long its transaction
    took, and each write's events with the context of the code that wrote it."""

    def committed(
        self,
        seconds: float,
        writes: Sequence[tuple[contextvars.Context | None, Sequence[StoredEvent]]],
    ) -> None: ...


class WriteRefused(Exception):
    """Raised by an `apply` that declines the write for a reason the caller expects
    (a conflict): the write fails alone, without a warning in the log."""


class LeaseLost(WriteRefused):
    """Another replica claimed the run since this process's lease: its write is refused."""


class EventLogClosed(RuntimeError):
    """The log no longer accepts writes (shutdown)."""


@dataclass
class _Write:
    session_id: str
    run_id: str | None
    events: Sequence[NewEvent] | EventsFor
    apply: Apply | None
    future: asyncio.Future[tuple[list[StoredEvent], Any]] = field(repr=False)
    lease: Lease | None = None
    context: contextvars.Context | None = field(default=None, repr=False)


class EventLog:
    """Owns the writer task; `append` is the only way events (and state) get written."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        broker: Broker,
        batch_max: int = 512,
        wake_chunk: int = 8,
        *,
        inline: async_sessionmaker[AsyncSession] | None = None,
        inline_max: int = INLINE_MAX_WRITES,
        notify_channel: str | None = None,
        fencing: bool = True,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._inline = inline
        self._inline_max = inline_max
        self._broker = broker
        self._batch_max = batch_max
        self._wake_chunk = max(1, wake_chunk)
        self._queue: asyncio.Queue[_Write] = asyncio.Queue()
        self._last_seq: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._notify_channel = notify_channel
        # Whether writes prove their leases. Off on SQLite, which has one writer process
        # (`serve` holds the database's lock), where no other replica can take a run.
        self._fencing = fencing
        # Ends each NOTIFY payload, so this process's own bridge skips its own commits
        # (their events are published here after the commit, not read back).
        self.origin = secrets.token_hex(6)
        # Whether another replica listens (the bridge keeps this current): alone, a
        # replica sends no NOTIFY, which would cost a statement in every commit.
        self.peers = True
        # Metrics and log lines of what is committed (set by the lifespan).
        self.observer: CommitObserver | None = None
        # Webhooks (set by the lifespan): the outbox rows of a write's events go into
        # the write's own transaction (app/webhooks/outbox.py).
        self.outbox: Outbox | None = None

    @property
    def broker(self) -> Broker:
        return self._broker

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._writer(), name="event-log-writer")

    async def stop(self) -> None:
        """Commit what is queued, then stop accepting writes."""
        self._closing = True
        if self._task is not None:
            await self._queue.join()
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def append(
        self,
        session_id: str,
        run_id: str | None,
        events: Sequence[NewEvent] = (),
        apply: Apply | None = None,
        *,
        lease: Lease | None = None,
    ) -> list[StoredEvent]:
        """Commit `events` (and `apply`'s changes) atomically; returns them with their seq."""
        stored, _ = await self.transact(session_id, run_id, events, apply, lease=lease)
        return stored

    async def transact(
        self,
        session_id: str,
        run_id: str | None,
        events: Sequence[NewEvent] | EventsFor = (),
        apply: Apply | None = None,
        *,
        lease: Lease | None = None,
    ) -> tuple[list[StoredEvent], Any]:
        """Like `append`, also returning what `apply` returned. `events` may be a
        function of that value, evaluated inside the transaction. With `lease`, the
        write commits only if the lease is still held at its epoch (else LeaseLost)."""
        if self._closing or self._task is None:
            raise EventLogClosed("the event log is not accepting writes")
        if not callable(events):
            _check_types(events)
        future: asyncio.Future[tuple[list[StoredEvent], Any]] = (
            asyncio.get_running_loop().create_future()
        )
        if lease is not None and lease.lost:
            raise LeaseLost(f"the lease of run {lease.run_id} was lost")
        # The writer's log lines about this write carry the writer's ids (request, run).
        context = None if self.observer is None else contextvars.copy_context()
        self._queue.put_nowait(_Write(session_id, run_id, events, apply, future, lease, context))
        # Shielded: a cancelled caller must not un-write what may already be committing.
        return await asyncio.shield(future)

    async def _writer(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            while len(batch) < self._batch_max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._commit_batch(batch)
            except Exception:
                # A commit whose outcome is unknown (a dropped connection) may have
                # used these numbers: re-read them from the database.
                for write in batch:
                    self._last_seq.pop(write.session_id, None)
                # One bad write must not fail its neighbours: retry each alone.
                for write in batch:
                    if not write.future.done():
                        await self._commit_alone(write)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _commit_alone(self, write: _Write) -> None:
        for attempt in range(1, SEQ_CONFLICT_TRIES + 1):
            try:
                await self._commit_batch([write])
                return
            except Exception as exc:
                self._last_seq.pop(write.session_id, None)
                if _is_seq_conflict(exc) and attempt < SEQ_CONFLICT_TRIES:
                    # Another process took that seq: re-read and try again.
                    await asyncio.sleep(random.uniform(0, SEQ_CONFLICT_PAUSE_S * attempt))
                    continue
                if not isinstance(exc, WriteRefused):
                    log.warning("event log write failed: %r", exc)
                if not write.future.done():
                    write.future.set_exception(exc)
                return

    async def _commit_batch(self, batch: list[_Write]) -> None:
        if self._inline is not None and len(batch) <= self._inline_max:
            try:
                return await self._commit_with(self._inline, batch)
            except OperationalError as exc:
                if not is_sqlite_busy(exc):
                    raise
                # Another process holds SQLite's write lock: wait for it off the loop.
        await self._commit_with(self._sessionmaker, batch)

    async def _commit_with(
        self, maker: async_sessionmaker[AsyncSession], batch: list[_Write]
    ) -> None:
        seqs = dict(self._last_seq)
        results: list[tuple[list[StoredEvent], Any]] = []
        leases = [write.lease for write in batch if write.lease is not None and self._fencing]
        sent = time.monotonic()
        began = time.perf_counter()
        async with maker() as db, db.begin():
            if self._only_inserts(batch, db):
                # One multi-row INSERT is atomic on its own: no BEGIN and no COMMIT,
                # two of a Postgres commit's three round trips.
                await db.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            if leases:
                await _fence(db, leases)
            rows: list[dict[str, Any]] = []
            outbox_rows: list[dict[str, Any]] = []
            touched: set[str] = set()
            sliced = time.perf_counter()
            for write in batch:
                if time.perf_counter() - sliced > SLICE_S:
                    # Hundreds of runs' checkpoints in one batch are tens of ms of work
                    # (their states' JSON, statements that do not yield on SQLite):
                    # let requests, streams and cancels in between.
                    await asyncio.sleep(0)
                    sliced = time.perf_counter()
                applied = await write.apply(db) if write.apply is not None else None
                stored: list[StoredEvent] = []
                new_events = write.events(applied) if callable(write.events) else write.events
                _check_types(new_events)
                if new_events:
                    if write.session_id not in seqs:
                        seqs[write.session_id] = await repo.max_event_seq(db, write.session_id)
                    now = utcnow()
                    for type_, data in new_events:
                        seqs[write.session_id] += 1
                        event = StoredEvent(
                            write.session_id, seqs[write.session_id], write.run_id, type_, data, now
                        )
                        stored.append(event)
                        rows.append(
                            {
                                "session_id": event.session_id,
                                "seq": event.seq,
                                "run_id": event.run_id,
                                "type": event.type,
                                "data": event.data,
                                "created_at": event.created_at,
                            }
                        )
                    touched.add(write.session_id)
                    if self.outbox is not None:
                        outbox_rows += await self.outbox.rows_for(db, write.session_id, stored)
                results.append((stored, applied))
            if rows:
                await repo.insert_events(db, rows)
                if outbox_rows:
                    await db_webhooks.insert_deliveries(db, outbox_rows)
                if self._notify_channel is not None and self.peers:
                    first: dict[str, int] = {}
                    for row in rows:
                        first.setdefault(row["session_id"], row["seq"])
                    await repo.notify(
                        db,
                        self._notify_channel,
                        [
                            f"{sid} {first[sid]} {seqs[sid]} {self.origin}"
                            for sid in sorted(touched)
                        ],
                    )
        # Committed: only now do the numbers become real and readers hear of them.
        elapsed = time.perf_counter() - began
        for lease in leases:
            lease.renewed(sent)
        self._last_seq.update({sid: seqs[sid] for sid in touched})
        if outbox_rows and self.outbox is not None:
            self.outbox.committed()
        for write, result in zip(batch, results, strict=True):
            if result[0]:
                self._broker.publish(write.session_id, result[0])
        if self.observer is not None:
            try:  # after the commit: nothing here may fail the batch (it would run again)
                self.observer.committed(
                    elapsed,
                    [(w.context, result[0]) for w, result in zip(batch, results, strict=True)],
                )
            except Exception:
                log.exception("could not observe a commit")
        woken = 0
        try:
            for write, result in zip(batch, results, strict=True):
                if woken and woken % self._wake_chunk == 0:
                    # Hundreds of runs wait on one batch; woken at once, each runs its
                    # next stretch of work in the same loop iteration and every other
                    # task (an HTTP request, a cancel, a stream) waits for all of them.
                    # A few at a time, with a turn of the loop in between, keeps the
                    # loop responsive. (Subscribers were all told above.)
                    await asyncio.sleep(0)
                if not write.future.done():
                    write.future.set_result(result)
                woken += 1
        finally:  # cancelled in between: what is committed is still reported
            for write, result in zip(batch[woken:], results[woken:], strict=True):
                if not write.future.done():
                    write.future.set_result(result)

    def _only_inserts(self, batch: list[_Write], db: AsyncSession) -> bool:
        """Whether the batch is events alone, whose seqs are known (one statement), on
        Postgres (elsewhere a transaction costs no round trip)."""
        return db.get_bind().dialect.name == "postgresql" and all(
            write.apply is None
            and (write.lease is None or not self._fencing)
            and (self._notify_channel is None or not self.peers)
            and not callable(write.events)
            and write.session_id in self._last_seq
            # Outbox rows would be a second statement: not for autocommit.
            and (self.outbox is None or self.outbox.quiet(write.session_id, _types(write.events)))
            for write in batch
        )

    def forget(self, session_id: str) -> None:
        """Drop the cached seq of a session (tests that reset the database)."""
        self._last_seq.pop(session_id, None)
        if self.outbox is not None:
            self.outbox.forget(session_id)


async def _fence(db: AsyncSession, leases: list[Lease]) -> None:
    """Renew the batch's leases in its own transaction; any lost fails the batch (its
    writes are then tried alone, and only the lost run's are refused)."""
    held: set[str] = set()
    by_owner: dict[tuple[str, float], list[Lease]] = {}
    for lease in leases:
        by_owner.setdefault((lease.owner, lease.ttl_s), []).append(lease)
    for (owner, ttl_s), group in by_owner.items():
        pairs = list({(lease.run_id, lease.epoch) for lease in group})
        held.update(await repo.renew_leases(db, owner, pairs, ttl_s))
    lost = [lease for lease in leases if lease.run_id not in held]
    if lost:
        for lease in lost:
            lease.lost = True
        raise LeaseLost(f"the lease of run {lost[0].run_id} was lost")


def _is_seq_conflict(exc: BaseException) -> bool:
    return isinstance(exc, IntegrityError) and "uq_events_session_seq" in str(exc.orig)


def _types(events: Sequence[NewEvent]) -> list[str]:
    return [type_ for type_, _data in events]


def _check_types(events: Sequence[NewEvent]) -> None:
    for type_, _data in events:
        if type_ not in EVENT_TYPES:
            raise ValueError(f"unknown event type {type_!r}")
