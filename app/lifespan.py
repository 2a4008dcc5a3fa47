"""Builds and tears down the service's parts, in order: engine, event log, computers,
runner, and on Postgres the LISTEN bridge to the other replicas; then the runner
claims the runs waiting in the database (queued, or left by a process that is gone)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.agents.computers import SessionComputers
from app.agents.providers import LoopRegistry
from app.agents.runner import Runner
from app.computers import build_computer
from app.computers.browser import BrowserPool
from app.computers.kernel_api import kernel_client
from app.db import repositories as repo
from app.db.engine import (
    checkpoint_wal,
    create_engine,
    create_inline_writer_engine,
    create_sessionmaker,
    migrate,
)
from app.events.bridge import EVENTS_CHANNEL, ListenBridge
from app.events.broker import Broker
from app.events.log import EventLog
from app.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Services:
    """Everything a request needs, handed over through `app.state.services`."""

    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    broker: Broker
    log: EventLog
    computers: SessionComputers
    runner: Runner
    loops: LoopRegistry
    browsers: BrowserPool
    bridge: ListenBridge | None = None
    shutting_down: bool = field(default=False)

    def begin_shutdown(self) -> None:
        """From the shutdown signal on: new runs get 503, runs stop at a step boundary."""
        self.shutting_down = True
        self.runner.draining = True


GC_GEN0_THRESHOLD = 10_000


def tune_gc_for_serving() -> None:
    """The cyclic GC of a long-running server, called once by `agent-sessions serve`
    after start-up (measured with bench/step_overhead.py):

    - freeze what start-up left alive: ~360,000 tracked objects (modules,
      SQLAlchemy's mappings, the SDKs' pydantic types) that never die, which every
      full collection walked: a 170 ms stall of the event loop each time;
    - collect the young generation every 10,000 net allocations instead of 700:
      a busy service allocates fast, and at 700 the full collections it led to
      (~100 ms each with 200 active runs) came often enough to set the loop's
      p99 lag. Cyclic garbage waits a little longer; memory is not affected
      measurably."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def make_lifespan(settings: Settings) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await migrate(settings.database_url)
        engine = create_engine(settings.database_url)
        sessionmaker = create_sessionmaker(engine)
        inline_engine = create_inline_writer_engine(settings.database_url)
        broker = Broker(settings.subscriber_queue_size)
        event_log = EventLog(
            sessionmaker,
            broker,
            settings.event_batch_max,
            inline=None if inline_engine is None else create_sessionmaker(inline_engine),
            notify_channel=None if settings.is_sqlite else EVENTS_CHANNEL,
            fencing=not settings.is_sqlite,
        )
        event_log.start()
        browsers = BrowserPool.from_settings(settings)
        kernel = kernel_client(settings)  # one Kernel client (connection pool) per service
        computers = SessionComputers(
            lambda spec: build_computer(spec, settings, browsers, kernel),
            idle_ttl_s=settings.computer_idle_ttl_s,
        )
        computers.start()
        loops = LoopRegistry(settings)
        runner = Runner(settings, sessionmaker, event_log, computers, loops.create)
        bridge = None
        if not settings.is_sqlite:  # replicas: events and commands from the others
            bridge = ListenBridge(settings.database_url, sessionmaker, event_log, runner.on_signal)
            runner.signal = bridge.signal
            bridge.start()
            with contextlib.suppress(TimeoutError):
                await bridge.wait_connected(10)  # else /readyz says so until it is
        services = Services(
            settings,
            engine,
            sessionmaker,
            broker,
            event_log,
            computers,
            runner,
            loops,
            browsers,
            bridge,
        )
        app.state.services = services
        runner.start()  # claims queued runs and those whose lease lapsed, from now on
        log.info("replica %s started", settings.replica_id)
        wal = asyncio.create_task(checkpoint_wal(engine), name="sqlite-wal-checkpoint")
        try:
            yield
        finally:
            services.begin_shutdown()
            await runner.shutdown(settings.shutdown_grace_s)
            if bridge is not None:
                await bridge.stop()
            broker.close()
            await computers.stop()
            async with sessionmaker() as db:
                resumable = {run.session_id for run in await repo.list_unfinished_runs(db)}
            await computers.leave_all(resumable)
            await browsers.close()
            if kernel is not None:
                await kernel.close()
            await event_log.stop()
            wal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await wal
            await loops.close()
            if inline_engine is not None:
                await inline_engine.dispose()
            await engine.dispose()

    return lifespan
