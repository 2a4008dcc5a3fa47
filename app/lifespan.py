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
from app.observability.metrics import Metrics
from app.observability.observer import Observer
from app.observability.prices import PriceTable
from app.observability.tracing import Tracing
from app.retention import Purger
from app.settings import Settings
from app.tenant_limits import TenantRequestLimiter
from app.webhooks.service import Webhooks

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
    # Metrics (GET /metrics), run log lines and spans: app/observability/.
    observer: Observer = field(default_factory=Observer)
    # The outbox, the address rule, signing and the delivery worker: app/webhooks/.
    webhooks: Webhooks | None = None
    # TENANT_REQUESTS_PER_S (app/tenant_limits.py); None counts nothing.
    tenant_requests: TenantRequestLimiter | None = None

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


def make_lifespan(
    settings: Settings, tracing: Tracing | None = None
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # First, so that a bad MODEL_PRICES_FILE stops the start before anything runs.
        observer = Observer(Metrics(), PriceTable.load(settings.model_prices_file), tracing)
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
        event_log.observer = observer
        webhooks = Webhooks.from_settings(settings, event_log)
        event_log.outbox = webhooks.outbox  # outbox rows in the events' own transaction
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
        runner.observer = observer
        observer.metrics.watch(
            runs_active=lambda: runner.active_count,
            leases_held=lambda: runner.leases.held_count,
            sse_subscribers=broker.subscriber_count,
        )
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
            observer=observer,
            webhooks=webhooks,
            tenant_requests=TenantRequestLimiter.from_settings(settings, sessionmaker),
        )
        app.state.services = services
        if tracing is not None:
            tracing.start()  # outgoing httpx requests get spans from now on
        webhooks.deliverer.on_outcome.append(observer.webhook_delivery)  # the metric
        runner.start()  # claims queued runs and those whose lease lapsed, from now on
        webhooks.deliverer.start()  # claims due webhook deliveries, from now on
        purger = Purger(settings, event_log)  # expired idempotency keys, RETENTION_DAYS
        purger.start()
        keyed = loops.with_keys()
        log.info(
            "replica %s started; providers with keys: %s",
            settings.replica_id,
            ", ".join(keyed) or "none",
            extra={"providers": keyed, "tracing": tracing is not None},
        )
        wal = asyncio.create_task(checkpoint_wal(engine), name="sqlite-wal-checkpoint")
        try:
            yield
        finally:
            services.begin_shutdown()
            # Attempts in flight get the grace too, alongside the runs; then abandoned.
            deliverer_stopped = asyncio.create_task(
                webhooks.deliverer.stop(settings.shutdown_grace_s)
            )
            await purger.stop()
            await runner.shutdown(settings.shutdown_grace_s)
            await deliverer_stopped
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
            if tracing is not None:
                await asyncio.to_thread(tracing.shutdown)  # exports the spans still batched

    return lifespan
