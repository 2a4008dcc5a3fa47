"""Replay then live tail: the ordered, gapless event stream of one session.

The subscription is opened *before* the replay reads the database, so an event
committed during the replay is either in the replay or in the queue; the
cursor drops what was already sent. A subscriber that fell behind (its queue
overflowed) or sees a gap re-reads the database from its cursor. The result:
every stored event exactly once, in seq order, whatever the timing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sse_starlette import ServerSentEvent

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


async def resolve(
    sessionmaker: async_sessionmaker[AsyncSession],
    request: StreamRequest,
    *,
    session_closed: bool,
    last_seq: int,
    run_active: bool = False,
) -> StreamRequest | None:
    """The stream to serve for `request`, or None when it could never yield an event
    (SSE answers that with 204, which stops a browser's EventSource from reconnecting):
    the `until_run` target already ended at or before the cursor; the session is closed,
    no run of it is still ending, and the cursor is at its last event; or the request
    does not follow and the cursor is at the last event. A closed session is replayed,
    then the stream closes (it is not followed)."""
    if request.until_run is not None:
        async with sessionmaker() as db:
            end = await repo.terminal_event_seq(db, request.session_id, request.until_run)
        if end is not None and end <= request.after:
            return None
    if not request.follow and request.after >= last_seq:
        return None
    if session_closed and not run_active:
        # (A close whose cancel gave up on a stalled owner leaves the run active: its
        # run.cancelled comes after session.closed, so the stream stays followed.)
        if request.after >= last_seq:
            return None
        return StreamRequest(
            request.session_id, request.after, follow=False, until_run=request.until_run
        )
    return request


def event_data(event: StoredEvent) -> str:
    """The event's JSON as a stream's `data:` line carries it (and a webhook's body)."""
    return json.dumps(event.to_json(), separators=(",", ":"))


def sse_frame(event: StoredEvent) -> bytes:
    """The event as one SSE message (`id`, `event`, `data: <Event JSON>`), encoded on
    first use and kept on the event: the Broker hands the same object to every
    subscriber, so a fan-out to N streams encodes it once, not N times."""
    if event.frame is None:
        data = event_data(event)
        frame = ServerSentEvent(data=data, event=event.type, id=str(event.seq)).encode()
        object.__setattr__(event, "frame", frame)  # a cache, not state: frozen otherwise
        return frame
    return event.frame


async def _read_from(
    sessionmaker: async_sessionmaker[AsyncSession], session_id: str, after: int
) -> AsyncGenerator[list[StoredEvent], None]:
    cursor = after
    while True:
        async with sessionmaker() as db:
            page = await repo.list_events(db, session_id, cursor, REPLAY_PAGE)
        if page:
            cursor = page[-1].seq
            yield page
        if len(page) < REPLAY_PAGE:
            return


async def stream_batches(
    sessionmaker: async_sessionmaker[AsyncSession],
    broker: Broker,
    request: StreamRequest,
    *,
    wake_every: float = 1.0,
    stop: Callable[[], bool] | None = None,
) -> AsyncGenerator[list[StoredEvent], None]:
    """Yield the session's events after `request.after`, then live ones until told to
    stop, in runs of consecutive events: a replayed page, or what was queued for the
    subscriber since it last read (never empty).

    `stop` is asked before each wait for a live event (so at least every `wake_every` s):
    when it says so, the stream ends (the server is shutting down; the client resumes
    elsewhere or later from its Last-Event-ID)."""
    sub = broker.subscribe(request.session_id) if request.follow else None
    cursor = request.after
    try:
        replay_needed = True
        while True:
            if replay_needed:
                replay_needed = False
                if sub is not None:
                    sub.reset_lag()
                async for page in _read_from(sessionmaker, request.session_id, cursor):
                    batch, ended = _take(page, request)
                    cursor = batch[-1].seq
                    yield batch
                    if ended:
                        return
            if sub is None or not request.follow:
                return
            if stop is not None and stop():
                return
            queued = await sub.get_many(wake_every)
            if not queued:
                if sub.closed:
                    return
                if sub.lagged:
                    replay_needed = True
                continue
            fresh = [event for event in queued if event.seq > cursor]
            if not fresh:
                continue
            if fresh[0].seq != cursor + 1 or fresh[-1].seq != cursor + len(fresh):
                # Something was missed (cannot normally happen): the database has it.
                replay_needed = True
                continue
            batch, ended = _take(fresh, request)
            cursor = batch[-1].seq
            yield batch
            if ended:
                return
    finally:
        if sub is not None:
            sub.unsubscribe()


def _take(events: list[StoredEvent], request: StreamRequest) -> tuple[list[StoredEvent], bool]:
    """`events` up to the one that ends the stream, if any; True when it does."""
    for i, event in enumerate(events):
        if _is_end(event, request):
            return events[: i + 1], True
    return events, False


def _is_end(event: StoredEvent, request: StreamRequest) -> bool:
    if request.until_run is not None:
        return event.is_terminal and event.run_id == request.until_run
    # A followed session that closes ends its stream: its reconnect replays whatever was
    # appended after the close (a remote run's late end) and closes, or gets 204.
    return request.follow and event.type == "session.closed"
