"""The runner: runs as supervised background tasks, with queueing, cancel, drain and resume.

Each run is two tasks. The *inner* task is the provider loop; the *outer* task
supervises it and is never cancelled: it waits for the loop, a cancel request,
or the run's time limit, and then writes the run's terminal state and event in
one transaction. Cancelling the inner task interrupts whatever it awaits (a
model call, an action), so a cancel takes effect at once; the outer task then
repairs the transcript and announces `run.cancelled`.

Which runs this process executes is decided in the database (app/agents/leases.py):
a run is claimed with a lease, every write of it proves the lease, and a run
queued anywhere waits in the database until a replica with room claims it.
Commands for a run another replica owns (cancel) are committed and signalled to
it; a run nobody owns is concluded by whoever received the command.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.agents.base import (
    AgentLoop,
    ProviderError,
    RunConfig,
    RunHalted,
    RunLimitExceeded,
    RunOutcome,
)
from app.agents.computers import SessionComputers
from app.agents.context import (
    RunSuspended,
    ServiceRunContext,
    UsageTotals,
    last_executed_action,
)
from app.agents.leases import FencedComputer, LeaseKeeper
from app.agents.retry import RetryPolicy
from app.agents.safety import SafetyGate, check_event_data
from app.computers.base import Computer, ComputerError, Display
from app.db import repositories as repo
from app.db.lease import Lease
from app.db.models import RunRow, SessionRow, utcnow
from app.events.log import Apply, EventLog, LeaseLost, WriteRefused
from app.observability.observer import Observer
from app.settings import Settings

log = logging.getLogger(__name__)

LoopFactory = Callable[[str], AgentLoop]
USAGE_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


# A signal to the other replicas (the LISTEN bridge's NOTIFY), sent in the caller's
# transaction: "cancel <run_id> <reason>", "decided <run_id>", "work", "release <sid>",
# "leave <sid> <replica>".
Signal = Callable[[AsyncSession, str], Awaitable[None]]
# Cancel reasons that leave the run to another process instead of ending it.
LEFT_FOR_OTHERS = ("shutdown", "lease_lost")
CANCELLED_NOTE = "Interrupted: the run was cancelled."
# At shutdown, how long an action under way may take to finish (it is never cut).
ACTION_DRAIN_S = 30.0


class RunConflict(WriteRefused):
    """The session cannot take a run now (one is active, or it is closed)."""


class RunOwnedElsewhere(WriteRefused):
    """A live replica holds the run's lease: only it may conclude the run."""


@dataclass
class _Active:
    session_id: str
    outer: asyncio.Task[None]
    lease: Lease
    # What cancel() interrupts: the computer's start-up, then the provider loop.
    inner: asyncio.Task[Any] | None = None
    cancel_reason: str | None = None
    computer: FencedComputer | None = None


def run_config(session: SessionRow, run: RunRow, settings: Settings) -> RunConfig:
    options = session.options or {}
    display = (session.computer or {}).get("display") or {}
    return RunConfig(
        session_id=session.id,
        run_id=run.id,
        provider=session.provider,
        model=session.model,
        system_prompt=session.system_prompt,
        computer_type=(session.computer or {}).get("type", "browser"),
        display=Display(
            int(display.get("width", settings.default_display_width)),
            int(display.get("height", settings.default_display_height)),
        ),
        max_steps=int(options.get("max_steps") or settings.default_max_steps),
        image_retention=int(options.get("image_retention") or settings.default_image_retention),
        thinking_budget=options.get("thinking_budget") or settings.default_thinking_budget,
        tool_version=options.get("tool_version"),
        prompt_caching=bool(
            options["prompt_caching"]
            if options.get("prompt_caching") is not None
            else settings.default_prompt_caching
        ),
        max_tokens=settings.max_tokens,
        safety=session.safety or {},
        turn_retention=options.get("turn_retention"),
        output_schema=run.output_schema,
    )


class Runner:
    """Owns every active run of this process."""

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        log: EventLog,
        computers: SessionComputers,
        loops: LoopFactory,
    ) -> None:
        self._settings = settings
        self._sessionmaker = sessionmaker
        self._log = log
        self._computers = computers
        self._loops = loops
        self._policy = RetryPolicy(
            max_retries=settings.provider_max_retries,
            timeout_s=settings.provider_timeout_s,
            backoff_initial_s=settings.provider_backoff_initial_s,
            backoff_max_s=settings.provider_backoff_max_s,
            retry_after_max_s=settings.provider_retry_after_max_s,
        )
        self._active: dict[str, _Active] = {}
        self.draining = False
        self.safety_gate = SafetyGate()
        self.replica = settings.replica_id
        self.leases = LeaseKeeper(
            sessionmaker,
            settings.replica_id,
            settings.lease_ttl_s,
            settings.lease_renew_s,
            on_lost=self._lease_lost,
            on_cancel_requested=self._cancel_requested,
            tenant_limit=settings.tenant_max_active_runs,
        )
        # Set by the LISTEN bridge on Postgres: commands reach the other replicas.
        self.signal: Signal | None = None
        # Metrics, log context and spans of runs (the service's own, set by the lifespan).
        self.observer = Observer()
        self._claim_wake: asyncio.Event | None = None
        self._claimer: asyncio.Task[None] | None = None
        self._pending_cancels: set[asyncio.Task[None]] = set()
        self._stopped = False

    # ---- starting runs ----------------------------------------------------------

    async def create_run(
        self,
        session_id: str,
        user_input: str,
        run_id: str,
        *,
        output_schema: dict[str, Any] | None = None,
    ) -> RunRow:
        """Insert a queued run (409 semantics via RunConflict) and schedule it."""

        async def insert(db: AsyncSession) -> RunRow:
            # Locked: a close or another run created on another replica waits for this.
            session = await db.get(SessionRow, session_id, with_for_update=True)
            if session is None or session.status == "closed":
                raise RunConflict("the session is closed")
            if session.active_run_id is not None:
                raise RunConflict(f"run {session.active_run_id} is still active")
            run = RunRow(
                id=run_id,
                session_id=session_id,
                status="queued",
                input=user_input,
                output_schema=output_schema,
                usage={},
                turns=0,
            )
            db.add(run)
            session.active_run_id = run_id
            session.last_run_id = run_id
            session.status = "running"
            session.updated_at = utcnow()
            await self.queued(db)
            return run

        try:
            _, run = await self._log.transact(
                session_id,
                run_id,
                [("run.queued", {"run_id": run_id, "input": user_input})],
                insert,
            )
        except IntegrityError as exc:
            # The session row lock serializes creates; the partial unique index
            # (migration 0004) is the database's own guarantee behind it.
            if "uq_runs_one_unfinished_per_session" in str(exc.orig) or (
                "runs.session_id" in str(exc.orig)  # SQLite names the column instead
            ):
                raise RunConflict("another run of this session is still active") from exc
            raise
        self.wake()
        return run  # type: ignore[no-any-return]

    async def queued(self, db: AsyncSession) -> None:
        """A run is queued in `db`'s transaction: with no room here, the other replicas
        hear of it when it commits (the claim loop here is woken by `wake`)."""
        if self.signal is not None and (
            self.draining or len(self._active) >= self._settings.max_active_runs
        ):
            await self.signal(db, "work")

    def wake(self) -> None:
        """A run was queued or room was made: claim work now, not at the next interval."""
        if self._claim_wake is not None:
            self._claim_wake.set()

    def start(self) -> None:
        """Claim the runs waiting in the database, now and whenever there is room."""
        if self._claimer is None:
            self._claim_wake = asyncio.Event()
            self.leases.start()
            self._claimer = asyncio.create_task(self._claim_forever(), name="run-claims")

    async def _claim_forever(self) -> None:
        assert self._claim_wake is not None
        own_past = True  # once: the runs a previous life of this REPLICA_ID held
        # Woken when a run is queued or ends; on a timer for the runs queued or left by
        # other replicas, and for this one's own runs whose lease lapsed.
        while not self.draining:
            self._claim_wake.clear()
            try:
                while not self.draining:
                    room = self._settings.max_active_runs - len(self._active)
                    claimed = await self.leases.claim(
                        room, own_past=own_past, running_here=list(self._active)
                    )
                    own_past = False
                    for run, lease in claimed:
                        self._start(run, lease)
                    if len(claimed) < room or room <= 0:
                        break
            except Exception as exc:  # the database is away (or locked): try again soon
                log.warning("claiming runs failed: %r", exc)
            try:
                async with asyncio.timeout(self._settings.claim_interval_s):
                    await self._claim_wake.wait()
            except TimeoutError:
                pass

    def _start(self, run: repo.ClaimedRun, lease: Lease) -> None:
        if run.run_id in self._active:  # cannot happen (claims skip them): never twice
            log.error("run %s claimed while it runs here", run.run_id)
            return
        reason = None if run.status == "queued" else self._resume_reason(run)
        log.info("claimed run %s at epoch %d (%s)", run.run_id, run.epoch, reason or "queued")
        task = asyncio.create_task(
            self._supervise(run.session_id, run.run_id, reason), name=f"run-{run.run_id}"
        )
        self._active[run.run_id] = _Active(run.session_id, task, lease)

    def _resume_reason(self, run: repo.ClaimedRun) -> str:
        if self._settings.is_sqlite or run.previous_owner == self.replica:
            return "restart"
        return "handoff" if run.previous_owner is None else "takeover"

    @property
    def active_count(self) -> int:
        return len(self._active)

    # ---- cancelling ---------------------------------------------------------------

    async def cancel(self, session_id: str, run_id: str, reason: str = "cancelled") -> None:
        """Stop the run; returns once its terminal state is committed (or, for a run
        another replica owns and does not stop, after that replica's lease could lapse
        twice over)."""
        requested = False
        deadline = time.monotonic() + 2 * self._settings.lease_ttl_s + 5
        delay = 0.01
        unowned = True  # worth trying to conclude it here
        while True:
            active = self._active.get(run_id)
            if active is not None:
                active.cancel_reason = active.cancel_reason or reason
                if active.inner is not None:
                    active.inner.cancel()
                await asyncio.shield(active.outer)
                if active.cancel_reason not in LEFT_FOR_OTHERS:
                    return
                continue  # it was left for another replica: cancel it there
            if unowned:
                # Queued, or its owner is gone: conclude it here, fencing the owner out.
                try:
                    await self._cancel_unowned(session_id, run_id)
                    return
                except RunOwnedElsewhere:
                    pass
            # A live replica runs it (maybe this one, whose claim is in flight): ask it.
            if not requested:
                await self._request_cancel(run_id, reason)
                requested = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
            async with self._sessionmaker() as db:
                found = await repo.run_lease_state(db, run_id, self.replica)
            if found is None or found[0] in repo.TERMINAL_RUN_STATUSES:
                return
            unowned = not found[1]  # its owner's lease lapsed: no one will carry it out
            if time.monotonic() > deadline:
                log.warning("run %s: its owner did not carry out the cancel", run_id)
                return

    async def _cancel_unowned(self, session_id: str, run_id: str) -> None:
        """Conclude a run no live replica holds as its owner would have: the transcript
        of its last checkpoint repaired, its last executed action reported.
        RunOwnedElsewhere when a live replica holds it after all."""
        async with self._sessionmaker() as db:
            session = await db.get(SessionRow, session_id)
            run = await db.get(RunRow, run_id)
            earlier = await repo.list_run_events(
                db, session_id, run_id, ("tool.call", "tool.result")
            )
        state = None
        if session is not None and run is not None and run.status != "queued":
            try:
                loop = self._loops(session.provider)
            except (ProviderError, ValueError):  # not configured here: left as it is
                loop = None
            if loop is not None:
                state = loop.repair(dict(session.agent_state or {}), CANCELLED_NOTE)
        last = last_executed_action([(e.type, e.data) for e in earlier])
        await self._finish(session_id, run_id, "cancelled", "cancelled", None, None, state, last)

    async def _request_cancel(self, run_id: str, reason: str) -> None:
        async with self._sessionmaker() as db, db.begin():
            if await repo.request_cancel(db, run_id, reason) and self.signal is not None:
                await self.signal(db, f"cancel {run_id} {reason}")

    async def announce(self, message: str) -> None:
        """Send a command to the other replicas (nothing on SQLite: there are none)."""
        if self.signal is not None:
            async with self._sessionmaker() as db, db.begin():
                await self.signal(db, message)

    def on_signal(self, message: str) -> None:
        """A command from another replica (through the LISTEN bridge)."""
        if self._stopped:
            return
        verb, _, rest = message.partition(" ")
        if verb == "work":
            self.wake()
        elif verb == "cancel":
            run_id, _, reason = rest.partition(" ")
            self._cancel_requested(run_id, reason or "cancelled")
        elif verb == "decided":
            self.safety_gate.notify(rest)
        elif verb in ("release", "leave"):
            # release: the session was closed; leave: its run goes on in `sender`.
            session_id, _, sender = rest.partition(" ")
            if sender == self.replica or any(
                a.session_id == session_id for a in self._active.values()
            ):
                return
            act = self._computers.release if verb == "release" else self._computers.leave
            task = asyncio.create_task(act(session_id))
            self._pending_cancels.add(task)
            task.add_done_callback(self._pending_cancels.discard)

    def _cancel_requested(self, run_id: str, reason: str) -> None:
        active = self._active.get(run_id)
        if active is None or active.cancel_reason is not None:
            return
        task = asyncio.create_task(self.cancel(active.session_id, run_id, reason))
        self._pending_cancels.add(task)
        task.add_done_callback(self._pending_cancels.discard)

    def _lease_lost(self, lease: Lease) -> None:
        """Another replica claimed the run: stop it here without another write or action."""
        active = self._active.get(lease.run_id)
        if active is None or active.lease is not lease:
            return
        active.cancel_reason = "lease_lost"
        if active.inner is not None:
            active.inner.cancel()

    # ---- supervision ---------------------------------------------------------------

    async def _supervise(self, session_id: str, run_id: str, resumed: str | None) -> None:
        active = self._active[run_id]
        observed = self.observer.run_scope(session_id, run_id)  # log ids, the run's span
        # Until it ends, the session's computer is in use: never released as idle.
        self._computers.run_started(session_id)
        try:
            await self._drive(active, session_id, run_id, resumed)
        except LeaseLost:
            active.cancel_reason = "lease_lost"
        except Exception:
            log.exception("run %s crashed in its supervisor", run_id)
            try:
                await self._finish(
                    session_id,
                    run_id,
                    "failed",
                    "error",
                    None,
                    {"type": "internal_error", "message": "the run stopped on an internal error"},
                    None,
                    lease=active.lease,
                )
            except Exception:
                log.exception("could not record the failure of run %s", run_id)
        finally:
            self._computers.run_ended(session_id)
            if active.cancel_reason == "lease_lost":
                log.warning("run %s lost its lease; stopped here: another replica holds it", run_id)
            if active.cancel_reason in LEFT_FOR_OTHERS:
                await self._leave(active)
            self.leases.forget(active.lease)
            if self._active.get(run_id) is active:
                del self._active[run_id]
            self.safety_gate.forget(run_id)
            self.wake()
            observed.end()

    async def _leave(self, active: _Active) -> None:
        """The run goes on elsewhere: its computer is left (a remote one stays up for
        the next owner) and, when this replica still holds the lease (a hand-off), the
        lease is released at once and the other replicas told."""
        try:
            await self._computers.leave(active.session_id)
            if active.cancel_reason == "shutdown" and not active.lease.lost:
                await self.leases.release(active.lease)
                await self.announce("work")
        except Exception as exc:  # the lease lapses by itself instead
            log.warning("could not hand run %s over: %r", active.lease.run_id, exc)

    async def _drive(
        self, active: _Active, session_id: str, run_id: str, resumed: str | None
    ) -> None:
        lease = active.lease
        finish = functools.partial(self._finish, lease=lease)
        async with self._sessionmaker() as db:
            session = await db.get(SessionRow, session_id)
            run = await db.get(RunRow, run_id)
        if session is None or run is None or run.status in repo.TERMINAL_RUN_STATUSES:
            return
        self.observer.run_loaded(session.tenant, session.provider, session.model)
        if run.cancel_requested is not None and active.cancel_reason is None:
            active.cancel_reason = run.cancel_requested  # asked while it was being claimed
        if active.cancel_reason in LEFT_FOR_OTHERS:
            return
        if active.cancel_reason is not None:
            await finish(session_id, run_id, "cancelled", "cancelled", None, None, None)
            return
        config = run_config(session, run, self._settings)
        state: dict[str, Any] = dict(session.agent_state or {})
        # The session's computer lives in this replica from now on: one another replica
        # kept from an earlier run is left there (a remote browser stays up for this one).
        await self.announce(f"leave {session_id} {self.replica}")
        try:
            loop = self._loops(session.provider)
            # The browser itself stops navigations to the session's blocked domains.
            spec = {
                **session.computer,
                "blocked_domains": (session.safety or {}).get("blocked_domains", []),
            }
            # Cancellable like the loop: starting a browser can take many seconds.
            acquiring = asyncio.create_task(
                self._computers.acquire(session_id, spec, session.page_url)
            )
            active.inner = acquiring
            if active.cancel_reason is not None:
                acquiring.cancel()
            computer = await acquiring
            await self._remember_remote(session, computer, lease)
        except asyncio.CancelledError:
            if active.cancel_reason is None:
                raise  # this supervisor itself was cancelled
            if active.cancel_reason not in LEFT_FOR_OTHERS:
                await finish(session_id, run_id, "cancelled", "cancelled", None, None, None)
            return
        except (ComputerError, ProviderError, ValueError) as exc:
            await finish(
                session_id,
                run_id,
                "failed",
                "error",
                None,
                {
                    "type": "computer_error"
                    if isinstance(exc, ComputerError)
                    else "configuration_error",
                    "message": str(exc),
                },
                None,
            )
            return

        started_at = run.started_at or utcnow()

        async def mark_running(db: AsyncSession) -> None:
            await repo.update_run(db, run_id, status="running", started_at=started_at)
            row = await db.get(SessionRow, session_id, with_for_update=True)
            if row is not None and row.status != "closed":  # a closed session stays closed
                row.status, row.updated_at = "running", utcnow()

        event = (
            ("run.resumed", {"reason": resumed, "replica": self.replica})
            if resumed is not None
            else ("run.started", {"input": run.input, "replica": self.replica})
        )
        if active.cancel_reason is not None:  # cancelled while the computer started
            if active.cancel_reason not in LEFT_FOR_OTHERS:
                await finish(session_id, run_id, "cancelled", "cancelled", None, None, None)
            return
        await self._log.append(session_id, run_id, [event], mark_running, lease=lease)

        active.computer = FencedComputer(computer, lease, self.leases)
        ctx = ServiceRunContext(
            config,
            active.computer,
            self._log,
            self._sessionmaker,
            self._policy,
            state,
            lambda: self.draining,
            self.safety_gate,
            self._settings.default_safety_check_timeout_s,
            totals=UsageTotals(run.usage, run.turns or 0, session.usage),
            lease=lease,
            observer=self.observer,
        )
        if resumed is not None:
            async with self._sessionmaker() as db:
                earlier = await repo.list_run_events(
                    db, session_id, run_id, ("tool.call", "tool.result")
                )
            ctx.seed([(e.type, e.data) for e in earlier])
        # Passed on resume too: a crash before the loop's first checkpoint must not lose it.
        active.inner = asyncio.create_task(
            ctx_run(loop, ctx, state, run.input, resumed is not None)
        )
        if active.cancel_reason is not None:
            active.inner.cancel()
        elapsed = (utcnow() - _aware(started_at)).total_seconds()
        remaining = max(0.0, self._settings.run_time_limit_s - elapsed)
        done, _ = await asyncio.wait({active.inner}, timeout=remaining)
        if not done:
            active.cancel_reason = active.cancel_reason or "time_limit"
            active.inner.cancel()
            await asyncio.wait({active.inner})
        await self._conclude(active, loop, ctx)

    async def _remember_remote(self, session: SessionRow, computer: Computer, lease: Lease) -> None:
        """A remote browser (kernel) is kept by its id, so a later process re-attaches
        to it instead of creating another; store the id when it changed."""
        backend = self._computers.get(session.id) or computer
        session_ref = getattr(backend, "session_ref", None)
        ref = session_ref() if callable(session_ref) else None
        if ref is None or (session.computer or {}).get("kernel_session_id") == ref:
            return
        spec = {**(session.computer or {}), "kernel_session_id": ref}

        async def save(db: AsyncSession) -> None:
            await repo.update_session(db, session.id, computer=spec)

        await self._log.append(session.id, None, apply=save, lease=lease)

    async def _conclude(self, active: _Active, loop: AgentLoop, ctx: ServiceRunContext) -> None:
        inner = active.inner
        assert inner is not None
        session_id, run_id = ctx.config.session_id, ctx.config.run_id
        reason = active.cancel_reason
        unflushed: Exception | None = None
        if ctx.deferred:
            # The loop's last checkpoint (a model reply, an action's result) was left for
            # its next write, which never came: commit it before anything reads ctx.state.
            try:
                await ctx.flush()
            except Exception as error:  # the run fails from its last committed state
                unflushed = error
        # The loop's staged writes (its last turn record) go into the run's final commit.
        # A run left for shutdown drops them: nothing committed refers to them, and a
        # resumed run records its current turn again from the checkpointed state.
        finish = functools.partial(self._finish, staged=ctx.take_staged(), lease=active.lease)
        exc = None if inner.cancelled() else inner.exception()
        if isinstance(exc, LeaseLost) or active.lease.lost:
            active.cancel_reason = "lease_lost"  # another replica goes on with it
            return
        if isinstance(exc, RunSuspended) and reason is None:
            active.cancel_reason = "shutdown"  # stopped at a step boundary: handed off
            return
        if inner.cancelled() or reason is not None:
            if reason in LEFT_FOR_OTHERS:
                # Left `running` with its last checkpoint: another replica (or this one,
                # restarted) resumes it.
                return
            note = (
                "Interrupted: the run hit its time limit."
                if reason == "time_limit"
                else CANCELLED_NOTE
            )
            state = loop.repair(ctx.state, note)
            if reason == "time_limit":
                await finish(
                    session_id,
                    run_id,
                    "failed",
                    "time_limit",
                    None,
                    {"type": "time_limit", "message": "the run exceeded its time limit"},
                    state,
                )
            else:
                await finish(
                    session_id,
                    run_id,
                    "cancelled",
                    reason or "cancelled",
                    None,
                    None,
                    state,
                    ctx.last_action_executed,
                )
            return
        if unflushed is not None:
            exc = unflushed  # what the loop ended on was not committed
        if exc is None:
            outcome = inner.result()
            await finish(
                session_id,
                run_id,
                "completed",
                outcome.stop_reason,
                outcome.output,
                None,
                None,
                output_json=outcome.output_json,
            )
        elif isinstance(exc, RunHalted):
            # A rejected or expired safety check: the loop left a valid transcript.
            await finish(
                session_id,
                run_id,
                "cancelled",
                exc.stop_reason,
                None,
                None,
                ctx.state,
                ctx.last_action_executed,
            )
        elif isinstance(exc, RunLimitExceeded):
            await finish(
                session_id,
                run_id,
                "failed",
                exc.stop_reason,
                None,
                {"type": exc.stop_reason, "message": str(exc)},
                None,
            )
        elif isinstance(exc, ProviderError):
            state = loop.repair(ctx.state, "Interrupted: the provider call failed.")
            await finish(
                session_id,
                run_id,
                "failed",
                "error",
                None,
                {"type": exc.type, "message": str(exc), "status_code": exc.status_code},
                state,
            )
        else:
            log.error("run %s failed", run_id, exc_info=exc)
            kind = "computer_error" if isinstance(exc, ComputerError) else "internal_error"
            state = loop.repair(ctx.state, "Interrupted: the run failed.")
            await finish(
                session_id,
                run_id,
                "failed",
                "error",
                None,
                {"type": kind, "message": str(exc) or type(exc).__name__},
                state,
            )

    async def _finish(
        self,
        session_id: str,
        run_id: str,
        status: str,
        stop_reason: str,
        output: str | None,
        error: dict[str, Any] | None,
        state: dict[str, Any] | None,
        last_action: dict[str, Any] | None = None,
        *,
        staged: Apply | None = None,
        lease: Lease | None = None,
        output_json: Any = None,
    ) -> None:
        """Commit the terminal state and its event together (nothing if already ended).
        With `lease`, as the run's owner; without, only if no live replica holds the run
        (RunOwnedElsewhere), and any past owner is fenced out by a new epoch."""
        now = utcnow()

        async def apply(db: AsyncSession) -> dict[str, Any] | None:
            if lease is None and not await repo.take_unowned_run(db, run_id, self.replica):
                found = await db.get(RunRow, run_id)
                if found is None or found.status in repo.TERMINAL_RUN_STATUSES:
                    return None
                raise RunOwnedElsewhere(f"run {run_id} is held by a live replica")
            if staged is not None:
                await staged(db)
            run = await db.get(RunRow, run_id)
            if run is None or run.status in repo.TERMINAL_RUN_STATUSES:
                return None
            run.status, run.stop_reason, run.output = status, stop_reason, output
            run.error, run.ended_at, run.output_json = error, now, output_json
            session = await db.get(SessionRow, session_id, with_for_update=True)
            if session is not None:
                if session.active_run_id == run_id:
                    session.active_run_id = None
                if session.status != "closed":
                    session.status = "idle"
                if state is not None:
                    session.agent_state = state
                session.updated_at = now
            expired = await repo.expire_pending_checks(db, run_id, now)
            data: dict[str, Any] = {
                "status": status,
                "stop_reason": stop_reason,
                "output": output,
                "error": error,
                "usage": {key: int((run.usage or {}).get(key, 0)) for key in USAGE_KEYS},
            }
            if status == "cancelled":
                data["last_action_executed"] = last_action
            if status == "completed":
                data["output_json"] = output_json  # structured output (SPEC v2.3)
            return {
                "run": data,
                "expired": [check_event_data(row) for row in expired],
                "provider": session.provider if session is not None else "other",
            }

        def announce(found: dict[str, Any] | None) -> list[tuple[str, dict[str, Any]]]:
            if found is None:
                return []
            # A run's still-pending checks expire with it, announced before its end.
            events = [("safety_check.expired", check) for check in found["expired"]]
            return [*events, (f"run.{status}", found["run"])]

        _, ended = await self._log.transact(session_id, run_id, announce, apply, lease=lease)
        if ended is not None:
            self.observer.run_ended(ended["provider"], status, error)

    # ---- lifecycle -------------------------------------------------------------------

    async def shutdown(self, grace_s: float) -> None:
        """Stop at step boundaries within `grace_s`, then interrupt; each run's lease is
        released as it stops, for another replica (or the next start) to go on with."""
        self.draining = True
        if self._claimer is not None:
            self.wake()  # it ends after the claim under way, if any (whose runs start)
            await self._claimer
            self._claimer = None
        outers = [a.outer for a in self._active.values()]
        if outers:
            await asyncio.wait(outers, timeout=grace_s)
        for active in list(self._active.values()):
            active.cancel_reason = active.cancel_reason or "shutdown"
            # A model call is abandoned (the next owner asks again); an action under way
            # is not cut: it ends, its result is committed, and the run stops there.
            if active.inner is not None and not (active.computer and active.computer.acting):
                active.inner.cancel()
        outers = [a.outer for a in self._active.values()]
        if outers:
            await asyncio.wait(outers, timeout=ACTION_DRAIN_S)
        self._stopped = True
        for task in list(self._pending_cancels):
            task.cancel()
        await self.leases.stop()


async def ctx_run(
    loop: AgentLoop,
    ctx: ServiceRunContext,
    state: dict[str, Any],
    user_input: str | None,
    resumed: bool,
) -> RunOutcome:
    return await loop.run(ctx, state, user_input, resumed=resumed)


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; they were written as UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
