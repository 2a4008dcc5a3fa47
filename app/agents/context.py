"""The RunContext the runner hands a provider loop: events, checkpoints, turns,
screenshots and provider calls, each committed through the event log.

A turn record and a screenshot are not written on their own: they are staged and
committed by the run's next write (an event or a checkpoint), which always
follows before anything refers to them. That saves three of a step's seven
sequential commits. A crash before that write loses nothing the state still
needs: the last committed state still has the turn to record (resume records
it again, idempotently), and no committed state or event names the screenshot.
The session-row columns a commit sets (the checkpointed state, the usage totals,
the page URL) go out in one UPDATE.

A checkpoint the loop follows with another write before anything leaves the
process (the model's reply, followed by the intent to run its first action; an
action's result, followed by the next turn.started) may be deferred the same
way: its state and events ride in the next write's transaction, ahead of that
write's own events. A step is then two commits instead of four. A crash in
between loses only what nothing outside the process has acted on yet, and the
runner flushes what is deferred before it ends or leaves a run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.agents.base import (
    CheckRequest,
    Event,
    RunConfig,
    SafetyDecision,
    StoredShot,
    TurnRecord,
)
from app.agents.retry import RetryPolicy, call_with_retries
from app.agents.safety import SafetyGate, check_event_data
from app.agents.safety import policy_checks as evaluate_policy
from app.computers.base import Computer, ShotImage
from app.db import repositories as repo
from app.db.lease import Lease
from app.db.models import RunRow, SafetyCheckRow, SessionRow, utcnow
from app.events.log import Apply, EventLog, EventsFor, NewEvent
from app.events.types import StoredEvent
from app.ids import new_id
from app.observability.observer import Observer

T = TypeVar("T")
# A write staged for the run's next commit; it may set session row columns.
Staged = Callable[[AsyncSession, dict[str, Any]], Awaitable[None]]
_SHOT_CACHE = 8
DECISION_REREAD_S = 2.0


class UsageTotals:
    """The run's and its session's usage and the run's turn count, kept here and
    written whole with each new turn: no read-modify-write in the commit. The
    runner loads them with the run; nothing else changes them while it runs (one
    active run per session)."""

    def __init__(
        self, run_usage: dict[str, Any] | None, run_turns: int, session_usage: dict[str, Any] | None
    ) -> None:
        self.run_usage, self.run_turns = dict(run_usage or {}), run_turns
        self.session_usage = dict(session_usage or {})
        self.counted: set[int] = set()  # the turns whose usage is in the totals

    def added(
        self, index: int, usage: dict[str, int]
    ) -> tuple[dict[str, int], int, dict[str, int]]:
        """The totals with turn `index` counted (once: a retried write asks again)."""
        if index in self.counted:
            return self.run_usage, self.run_turns, self.session_usage
        self.counted.add(index)
        self.run_usage = repo.add_usage(self.run_usage, usage)
        self.session_usage = repo.add_usage(self.session_usage, usage)
        self.run_turns = max(self.run_turns, index + 1)
        return self.run_usage, self.run_turns, self.session_usage


def last_executed_action(events: Sequence[Event]) -> dict[str, Any] | None:
    """The last action of `events` (a run's tool.call and tool.result, in order) that
    was executed, as `run.cancelled` reports it."""
    calls: dict[str, Any] = {}
    last: dict[str, Any] | None = None
    for type_, data in events:
        call_id = str(data.get("call_id"))
        if type_ == "tool.call":
            calls[call_id] = data.get("action")
        elif type_ == "tool.result" and call_id in calls and not data.get("not_executed"):
            last = {"call_id": call_id, "action": calls[call_id]}
    return last


class RunSuspended(Exception):
    """Raised from a checkpoint when the service drains: the run stops at a step
    boundary, stays `running` in the database, and resumes at the next start."""


class ServiceRunContext:
    """One run's link to the service. Tracks the last executed action for run.cancelled."""

    def __init__(
        self,
        config: RunConfig,
        computer: Computer,
        log: EventLog,
        sessionmaker: async_sessionmaker[AsyncSession],
        policy: RetryPolicy,
        state: dict[str, Any],
        should_suspend: Callable[[], bool],
        gate: SafetyGate,
        safety_timeout_s: float,
        *,
        totals: UsageTotals,
        lease: Lease | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.config = config
        # Metrics and spans of model calls, actions and turns (None: tests of a loop alone).
        self._observer = observer
        self.computer = (
            computer if observer is None else observer.computer(computer, config.computer_type)
        )
        self.state = state
        self.last_action_executed: dict[str, Any] | None = None
        self._log = log
        self._sessionmaker = sessionmaker
        self._policy = policy
        self._should_suspend = should_suspend
        self._gate = gate
        self._safety_timeout_s = safety_timeout_s
        self._calls: dict[str, Any] = {}
        self._shots: OrderedDict[str, ShotImage] = OrderedDict()
        # Writes that go with the run's next one; each may set session row columns.
        self._staged: list[Staged] = []
        # A deferred checkpoint: its state, its events, what to remember once committed.
        self._deferred_state: dict[str, Any] | None = None
        self._deferred: list[NewEvent] = []
        self._on_commit: list[Callable[[], None]] = []
        self._recorded_turns: set[int] = set()  # turn rows this process wrote
        self._totals = totals
        # Every write proves the run's lease (None: tests that drive a loop directly).
        self._lease = lease

    def note_executed(self, call_id: str, action: dict[str, Any] | None) -> None:
        """The computer finished `action`: it counts as executed even if the run is
        cancelled before its tool.result is committed."""
        self.last_action_executed = {"call_id": call_id, "action": action}

    def seed(self, events: Sequence[Event]) -> None:
        """Learn the actions a previous process ran in this run (for last_action_executed)."""
        self._observe(events)

    def _observe(self, events: Sequence[Event]) -> None:
        for type_, data in events:
            if type_ == "tool.call":
                self._calls[str(data.get("call_id"))] = data.get("action")
            elif type_ == "tool.result":
                call_id = str(data.get("call_id"))
                if call_id in self._calls and not data.get("not_executed"):
                    self.last_action_executed = {
                        "call_id": call_id,
                        "action": self._calls[call_id],
                    }

    async def emit(self, type_: str, data: dict[str, Any]) -> int:
        if type_ == "turn.started" and self._observer is not None:
            self._observer.turn_started(int(data.get("turn") or 0))  # the turn's span
        stored, _ = await self._transact(
            [(type_, data)], on_commit=lambda: self._observe([(type_, data)])
        )
        return stored[-1].seq

    def take_staged(self) -> Apply | None:
        """The staged writes as one `apply` (None if there are none), for the runner's
        final write of the run; they are no longer staged afterwards. A deferred
        checkpoint is not among them (`flush` it first): one still pending is
        dropped, and the run ends from the last committed state."""
        self._deferred_state, self._deferred, self._on_commit = None, [], []
        return self._apply_of(self._take())

    @property
    def deferred(self) -> bool:
        """Whether a deferred checkpoint waits for the next write."""
        return bool(self._on_commit)

    async def flush(self) -> None:
        """Commit a deferred checkpoint (and the writes staged with it) now."""
        if self._on_commit:
            await self._transact()

    def _take(self) -> list[Staged]:
        staged, self._staged = self._staged, []
        return staged

    def _apply_of(self, staged: list[Staged], state: dict[str, Any] | None = None) -> Apply | None:
        """One `apply` running `staged` in order, then saving `state` (the agent's);
        the session row columns they set are written by one UPDATE at the end."""
        if not staged and state is None:
            return None
        session_id = self.config.session_id

        async def apply(db: AsyncSession) -> None:
            columns: dict[str, Any] = {}  # fresh each time: a retried write runs it again
            for save in staged:
                await save(db, columns)
            if state is not None:
                columns["agent_state"] = state
            if columns:
                await repo.update_session(db, session_id, **columns)

        return apply

    async def _transact(
        self,
        events: Sequence[NewEvent] | EventsFor = (),
        apply: Apply | None = None,
        on_commit: Callable[[], None] | None = None,
        state: dict[str, Any] | None = None,
    ) -> tuple[list[StoredEvent], Any]:
        """Every write of the context. The staged writes and a deferred checkpoint go
        first, in the same commit; `state` (else the deferred checkpoint's) is the
        agent state it saves. `on_commit` (and the deferred checkpoint's) runs once
        it is committed. A cancel that arrives while the write is in flight waits
        for it (it commits regardless), so the context's view (state, last action)
        always matches the log before the cancel goes on."""
        taken, deferred, commits = self._take(), self._deferred, self._on_commit
        deferred_state = self._deferred_state
        self._deferred_state, self._deferred, self._on_commit = None, [], []
        staged = self._apply_of(taken, state if state is not None else deferred_state)
        if staged is not None:
            apply = _chain(staged, apply)
        if deferred:
            events = _after(deferred, events)
        done = [*commits, on_commit] if on_commit is not None else commits
        task = asyncio.ensure_future(
            self._log.transact(
                self.config.session_id, self.config.run_id, events, apply, lease=self._lease
            )
        )
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            while not task.done():  # a second cancel must not skip the bookkeeping
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait({task})
            if task.exception() is not None:  # a failed write committed nothing
                self._restore(taken, deferred_state, deferred, commits)
            else:
                for remember in done:
                    remember()
            raise
        except Exception:
            # Nothing of it was committed: the staged writes and the deferred
            # checkpoint go with the next write (the runner's final one at the
            # latest) instead of being lost.
            self._restore(taken, deferred_state, deferred, commits)
            raise
        for remember in done:
            remember()
        return result

    def _restore(
        self,
        taken: list[Staged],
        deferred_state: dict[str, Any] | None,
        deferred: list[NewEvent],
        commits: list[Callable[[], None]],
    ) -> None:
        self._staged[:0] = taken
        if commits:
            self._deferred_state = deferred_state
            self._deferred[:0] = deferred
            self._on_commit[:0] = commits

    async def checkpoint(
        self, state: dict[str, Any], events: Sequence[Event] = (), *, defer: bool = False
    ) -> None:
        def remember() -> None:
            self.state = state
            self._observe(events)

        if defer and not self._suspends(state):
            self._deferred_state = state
            self._deferred.extend(events)
            self._on_commit.append(remember)
            return
        await self._transact(list(events), on_commit=remember, state=state)
        if self._suspends(state):
            raise RunSuspended

    def _suspends(self, state: dict[str, Any]) -> bool:
        return self._should_suspend() and not state.get("in_flight")

    async def record_turn(self, turn: TurnRecord) -> None:
        """Staged: written by the run's next write."""
        config = self.config

        recorded = self._recorded_turns
        # The row holds a copy: the loop goes on appending to the turn's lists.
        actions, results = list(turn.actions), list(turn.results)

        totals = self._totals
        observer = self._observer

        async def save(db: AsyncSession, session: dict[str, Any]) -> None:
            now = utcnow()
            if turn.index in recorded and await repo.update_turn_results(
                db, config.run_id, turn.index, actions, results, now
            ):
                return  # the second write of a turn: response and usage are there
            values = {
                "id": f"turn_{config.run_id[4:]}_{turn.index:04d}",
                "session_id": config.session_id,
                "run_id": config.run_id,
                "index": turn.index,
                "request": turn.request,
                "response": turn.response,
                "actions": actions,
                "results": results,
                "usage": turn.usage,
                "latency_ms": turn.latency_ms,
                "started_at": now,
                "ended_at": now,
            }
            inserted = await repo.insert_or_update_turn(db, values)
            recorded.add(turn.index)
            # A turn may be written twice (response, then results; or again after a
            # restart): its usage counts once, when its row is inserted.
            if inserted:
                if observer is not None and turn.index not in totals.counted:
                    observer.turn_usage(config.provider, config.model, turn.usage)
                run_usage, run_turns, session_usage = totals.added(turn.index, turn.usage)
                await repo.update_run(db, config.run_id, usage=run_usage, turns=run_turns)
                session["usage"] = session_usage

        self._staged.append(save)

    async def store_screenshot(self, image: ShotImage, page_url: str | None) -> StoredShot:
        """Staged: written by the run's next write (the id is the content's hash, known now)."""
        session_id = self.config.session_id
        shot_id, _ = repo.screenshot_id(session_id, image.data)

        async def save(db: AsyncSession, session: dict[str, Any]) -> None:
            stored = await repo.store_screenshot(
                db, session_id, image.data, image.media_type, image.width, image.height
            )
            assert stored == shot_id
            if page_url is not None:
                session["page_url"] = page_url

        self._staged.append(save)
        self._remember(shot_id, image)
        return StoredShot(
            shot_id, session_id, image.width, image.height, image.media_type, page_url
        )

    def _remember(self, shot_id: str, image: ShotImage) -> None:
        self._shots[shot_id] = image
        self._shots.move_to_end(shot_id)
        while len(self._shots) > _SHOT_CACHE:
            self._shots.popitem(last=False)

    async def load_screenshot(self, shot_id: str) -> ShotImage:
        cached = self._shots.get(shot_id)
        if cached is not None:
            return cached
        async with self._sessionmaker() as db:
            row = await repo.get_screenshot(db, self.config.session_id, shot_id)
        if row is None:
            raise KeyError(f"screenshot {shot_id} not found")
        image = ShotImage(row.data, row.media_type, row.width, row.height)
        self._remember(shot_id, image)
        return image

    async def call_provider(self, call: Callable[[], Awaitable[T]]) -> T:
        observer, provider, model = self._observer, self.config.provider, self.config.model

        async def on_retry(data: dict[str, Any]) -> None:
            if observer is not None:
                observer.provider_retry(provider, data.get("status_code"))
            await self.emit("provider.retry", data)

        async def observed() -> T:  # each attempt is one model call
            assert observer is not None
            with observer.model_call(provider, model):
                return await call()

        return await call_with_retries(
            call if observer is None else observed, self._policy, on_retry
        )

    # ---- safety checks ---------------------------------------------------------

    async def policy_checks(self, action: dict[str, Any]) -> list[CheckRequest]:
        safety = self.config.safety
        if not any(
            safety.get(k) for k in ("require_ack_for", "allowed_domains", "blocked_domains")
        ):
            return []
        return evaluate_policy(safety, action, await self.computer.current_url())

    async def await_safety(
        self,
        call_id: str,
        action: dict[str, Any] | None,
        checks: Sequence[CheckRequest],
        state: dict[str, Any],
    ) -> SafetyDecision:
        config = self.config
        run_id, session_id = config.run_id, config.session_id
        timeout = float(config.safety.get("safety_check_timeout_s") or self._safety_timeout_s)

        async def persist(db: AsyncSession) -> list[Event]:
            rows = await repo.safety_checks_for_call(db, run_id, call_id)
            events: list[Event] = []
            if not rows:  # first time; after a restart the rows are already there
                expires_at = utcnow() + timedelta(seconds=timeout)
                rows = [
                    SafetyCheckRow(
                        id=new_id("sc"),
                        session_id=session_id,
                        run_id=run_id,
                        provider_check_id=check.provider_check_id,
                        code=check.code,
                        message=check.message,
                        call_id=call_id,
                        action=action,
                        status="pending",
                        expires_at=expires_at,
                    )
                    for check in checks
                ]
                db.add_all(rows)
                events += [("safety_check.pending", check_event_data(row)) for row in rows]
            pending = [row for row in rows if row.status == "pending"]
            if pending:
                await repo.update_run(db, run_id, status="awaiting_safety_check")
                await repo.update_session(db, session_id, status="awaiting_safety_check")
                events.append(
                    (
                        "run.awaiting_safety_check",
                        {
                            "call_id": call_id,
                            "check_ids": [row.id for row in pending],
                            "expires_at": check_event_data(pending[0])["expires_at"],
                        },
                    )
                )
            await repo.update_session(db, session_id, agent_state=state)
            return events

        await self._transact(lambda events: events, persist)
        self.state = state
        return await self._wait_for_decision(call_id)

    async def _wait_for_decision(self, call_id: str) -> SafetyDecision:
        run_id = self.config.run_id
        wake = self._gate.event(run_id)
        while True:
            wake.clear()  # before reading: a decision committed after this read still wakes us
            async with self._sessionmaker() as db:
                rows = await repo.safety_checks_for_call(db, run_id, call_id)
            rejected = [r for r in rows if r.status == "rejected"]
            if rejected:
                return SafetyDecision(
                    False, stop_reason="safety_check_rejected", reason=rejected[0].reason or ""
                )
            if any(r.status == "expired" for r in rows):
                return SafetyDecision(False, stop_reason="safety_check_timeout", reason="timed out")
            pending = [r for r in rows if r.status == "pending"]
            if not pending:
                await self._resume_after_decision(call_id)
                return SafetyDecision(
                    True,
                    acknowledged=tuple(
                        CheckRequest(r.code, r.message, r.provider_check_id) for r in rows
                    ),
                )
            expires_at = min(r.expires_at for r in pending if r.expires_at is not None)
            remaining = (expires_at - utcnow()).total_seconds()
            if remaining <= 0:
                await self._expire(call_id)
                continue
            try:
                # Woken by the decision (on another replica: through the LISTEN bridge);
                # re-read now and then, in case that wake-up was lost with a connection.
                await asyncio.wait_for(wake.wait(), min(remaining, DECISION_REREAD_S))
            except TimeoutError:
                pass

    async def _expire(self, call_id: str) -> None:
        run_id = self.config.run_id

        async def expire(db: AsyncSession) -> list[Event]:
            rows = await repo.expire_pending_checks(db, run_id, utcnow(), call_id)
            return [("safety_check.expired", check_event_data(row)) for row in rows]

        await self._transact(lambda events: events, expire)

    async def _resume_after_decision(self, call_id: str) -> None:
        run_id, session_id = self.config.run_id, self.config.session_id

        async def resume(db: AsyncSession) -> list[Event]:
            run = await db.get(RunRow, run_id)
            if run is None or run.status != "awaiting_safety_check":
                return []
            run.status = "running"
            session = await db.get(SessionRow, session_id, with_for_update=True)
            if session is not None and session.status == "awaiting_safety_check":
                session.status = "running"
            return [("run.resumed", {"reason": "safety_check_acknowledged", "call_id": call_id})]

        await self._transact(lambda events: events, resume)


def _after(
    first: Sequence[NewEvent], then: Sequence[NewEvent] | EventsFor
) -> Sequence[NewEvent] | EventsFor:
    """`first`, then `then`'s events (`then` may be a function of what `apply` found)."""
    if callable(then):
        return lambda applied: [*first, *then(applied)]
    return [*first, *then]


def _chain(first: Apply, then: Apply | None) -> Apply:
    """One `apply` running `first`, then `then` (whose result it returns)."""

    async def apply(db: AsyncSession) -> Any:
        await first(db)
        return await then(db) if then is not None else None

    return apply
