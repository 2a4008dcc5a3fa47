"""In-process fan-out of committed events to live subscribers.

Each subscriber owns a bounded queue. Publishing never blocks: when a queue
is full the subscriber is marked `lagged` and stops receiving; its stream
then catches up from the database (events are committed before they are
published), so a slow or stuck client can never slow the run or its peers.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence

from app.events.types import StoredEvent


class Subscription:
    """One live reader of one session's events."""

    def __init__(self, broker: Broker, session_id: str, maxsize: int) -> None:
        self._broker = broker
        self.session_id = session_id
        self.queue: asyncio.Queue[StoredEvent | None] = asyncio.Queue(maxsize=maxsize)
        self.lagged = False
        self.closed = False

    def offer(self, event: StoredEvent) -> None:
        if self.lagged or self.closed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.lagged = True

    def lag(self) -> None:
        """Make the reader re-read the database from its cursor now (what was published
        here may have missed events: the LISTEN bridge lost its connection)."""
        self.lagged = True
        try:
            self.queue.put_nowait(None)  # wakes a waiting reader; `lagged` says why
        except asyncio.QueueFull:
            pass  # the reader is busy with the queue and sees `lagged` when it ends

    def close(self) -> None:
        """Wake the reader and tell it the service is shutting down."""
        self.closed = True
        try:
            self.queue.put_nowait(None)
        except asyncio.QueueFull:
            pass

    async def get(self, wait_s: float | None = None) -> StoredEvent | None:
        """The next event, or None when closed, lagged or after `wait_s` seconds."""
        if self.closed and self.queue.empty():
            return None
        if self.lagged and self.queue.empty():
            return None
        if not self.queue.empty():
            return self.queue.get_nowait()  # no timer needed: the hot path of a busy stream
        try:
            # asyncio.timeout, not wait_for: wait_for wraps the get in a new task per call.
            async with asyncio.timeout(wait_s):
                return await self.queue.get()
        except TimeoutError:
            return None

    async def get_many(self, wait_s: float | None = None, limit: int = 256) -> list[StoredEvent]:
        """Everything queued (at most `limit`), waiting up to `wait_s` s for the first;
        empty when closed, lagged or nothing came. A busy stream then sends what piled
        up in one write instead of one per event."""
        first = await self.get(wait_s)
        if first is None:
            return []
        batch = [first]
        while len(batch) < limit and not self.queue.empty():
            event = self.queue.get_nowait()
            if event is None:  # closed: `closed` is set, the next call returns []
                break
            batch.append(event)
        return batch

    def reset_lag(self) -> None:
        """Drop what is queued and receive again; the caller re-reads from the database."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.lagged = False

    def unsubscribe(self) -> None:
        self._broker._remove(self)


class Broker:
    """Session id -> subscribers. Only the event log publishes, after commit."""

    def __init__(self, queue_size: int = 1024) -> None:
        self._queue_size = queue_size
        self._subs: defaultdict[str, set[Subscription]] = defaultdict(set)
        # The newest seq published per session that has subscribers: what a publish
        # from another source (the LISTEN bridge) already delivered is not sent twice.
        self._last: dict[str, int] = {}
        self._closed = False

    def subscribe(self, session_id: str) -> Subscription:
        sub = Subscription(self, session_id, self._queue_size)
        if self._closed:
            sub.close()
        else:
            self._subs[session_id].add(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.session_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.session_id]
                self._last.pop(sub.session_id, None)

    def publish(self, session_id: str, events: Sequence[StoredEvent]) -> None:
        """Hand `events` (one session's, in seq order) to its subscribers; events at or
        below the newest already published are dropped."""
        subs = self._subs.get(session_id)
        if not subs or not events:
            return
        last = self._last.get(session_id, 0)
        if events[0].seq <= last:
            events = [event for event in events if event.seq > last]
            if not events:
                return
        self._last[session_id] = events[-1].seq
        for sub in tuple(subs):
            for event in events:
                sub.offer(event)

    def last_published(self, session_id: str) -> int | None:
        """The newest seq published to the session's current subscribers, if any was."""
        return self._last.get(session_id)

    def subscribed_sessions(self) -> list[str]:
        return list(self._subs)

    def lag(self, session_id: str) -> None:
        """Every stream of the session re-reads the database from its own cursor."""
        for sub in tuple(self._subs.get(session_id, ())):
            sub.lag()

    def subscriber_count(self, session_id: str | None = None) -> int:
        if session_id is not None:
            return len(self._subs.get(session_id, ()))
        return sum(len(s) for s in self._subs.values())

    def close(self) -> None:
        """End every open stream (shutdown)."""
        self._closed = True
        for subs in list(self._subs.values()):
            for sub in tuple(subs):
                sub.close()
