"""Replay then live tail: the ordered, gapless event stream of one session.

The subscription is opened *before* the replay reads the database, so an event
committed during the replay is either in the replay or in the queue; the
cursor drops what was already sent. A subscriber that fell behind (its queue
overflowed) or sees a gap re-reads the database from its cursor. The result:
every stored event exactly once, in seq order, whatever the timing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import repositories as repo
from app.events.broker import Broker
from app.events.types import StoredEvent

REPLAY_PAGE = 500


@dataclass(frozen=True)
class StreamRequest:
    session_id: str
    after: int
    follow: bool = True
    # With `until_run`, the stream ends right after that run's terminal event.
    until_run: str | None = None


async def _read_from(
    sessionmaker: async_sessionmaker[AsyncSession], session_id: str, after: int
) -> AsyncIterator[StoredEvent]:
    cursor = after
    while True:
        async with sessionmaker() as db:
            page = await repo.list_events(db, session_id, cursor, REPLAY_PAGE)
        for event in page:
            cursor = event.seq
            yield event
        if len(page) < REPLAY_PAGE:
            return


async def stream_events(
    sessionmaker: async_sessionmaker[AsyncSession],
    broker: Broker,
    request: StreamRequest,
    *,
    wake_every: float = 1.0,
    stop: Callable[[], bool] | None = None,
) -> AsyncIterator[StoredEvent]:
    """Yield the session's events after `request.after`, then live ones until told to stop.

    `stop` is asked before each wait for a live event (so at least every `wake_every` s):
    when it says so, the stream ends (the server is shutting down; the client resumes
    elsewhere or later from its Last-Event-ID)."""
    sub = broker.subscribe(request.session_id) if request.follow else None
    cursor = request.after
    try:
        if request.until_run is not None:
            async with sessionmaker() as db:
                end = await repo.terminal_event_seq(db, request.session_id, request.until_run)
            if end is not None and end <= cursor:
                # The target already ended before the cursor: replay and close.
                request = StreamRequest(request.session_id, cursor, follow=False)
        replay_needed = True
        while True:
            if replay_needed:
                replay_needed = False
                if sub is not None:
                    sub.reset_lag()
                async for event in _read_from(sessionmaker, request.session_id, cursor):
                    cursor = event.seq
                    yield event
                    if _is_end(event, request):
                        return
            if sub is None or not request.follow:
                return
            if stop is not None and stop():
                return
            event_or_none = await sub.get(wake_every)
            if event_or_none is None:
                if sub.closed:
                    return
                if sub.lagged:
                    replay_needed = True
                continue
            event = event_or_none
            if event.seq <= cursor:
                continue
            if event.seq > cursor + 1:
                # Something was missed (cannot normally happen): the database has it.
                replay_needed = True
                continue
            cursor = event.seq
            yield event
            if _is_end(event, request):
                return
    finally:
        if sub is not None:
            sub.unsubscribe()


def _is_end(event: StoredEvent, request: StreamRequest) -> bool:
    return request.until_run is not None and event.is_terminal and event.run_id == request.until_run
