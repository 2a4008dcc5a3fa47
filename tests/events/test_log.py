"""The event log against the real database: gapless seq, atomic state changes,
commit before publish, group commit, and a lagging subscriber catching up."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sse_starlette import ServerSentEvent

from app.db import repositories as repo
from app.db.engine import create_engine, create_sessionmaker
from app.db.models import utcnow
from app.events.log import Apply, EventLog
from app.events.sse import StreamRequest, sse_frame, stream_batches
from app.events.types import StoredEvent
from tests.events.conftest import new_session


async def seqs_in_db(sessionmaker: async_sessionmaker[AsyncSession], session_id: str) -> list[int]:
    async with sessionmaker() as db:
        return [e.seq for e in await repo.list_events(db, session_id, 0, 100_000)]


async def test_concurrent_appends_are_gapless_per_session(
    event_log: EventLog, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    sessions = ["ses_a", "ses_b", "ses_c"]
    for sid in sessions:
        await new_session(event_log, sid)

    async def writer(sid: str, n: int) -> list[int]:
        out = []
        for i in range(n):
            stored = await event_log.append(sid, None, [("assistant.message", {"i": i})] * 2)
            out.extend(e.seq for e in stored)
        return out

    results = await asyncio.gather(*(writer(sid, 60) for sid in sessions for _ in range(3)))
    for sid in sessions:
        expected = list(range(1, 1 + 1 + 3 * 60 * 2))
        assert await seqs_in_db(sessionmaker, sid) == expected
        async with sessionmaker() as db:
            row = await repo.get_session(db, sid)
            assert row is not None and row.last_event_seq == expected[-1]
    # One writer's appends keep their order.
    assert all(r == sorted(r) and len(r) == 120 for r in results)


async def test_a_failing_write_fails_alone_and_gives_its_seq_back(
    event_log: EventLog, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await new_session(event_log, "ses_x")

    async def boom(db: AsyncSession) -> None:
        raise RuntimeError("state change refused")

    ok1 = event_log.append("ses_x", None, [("assistant.message", {"n": 1})])
    bad = event_log.append("ses_x", None, [("assistant.message", {"n": 2})], boom)
    ok2 = event_log.append("ses_x", None, [("assistant.message", {"n": 3})])
    results = await asyncio.gather(ok1, bad, ok2, return_exceptions=True)
    assert isinstance(results[1], RuntimeError)
    assert await seqs_in_db(sessionmaker, "ses_x") == [1, 2, 3]
    async with sessionmaker() as db:
        events = await repo.list_events(db, "ses_x", 0, 10)
    assert [e.data.get("n") for e in events[1:]] == [1, 3]


async def test_a_batch_of_events_alone_is_atomic_when_another_writer_took_its_seq(
    event_log: EventLog, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """Events without a state change commit as one statement (no transaction on
    Postgres): a conflict fails all of it, and each append then lands after the
    seq the other writer took."""
    await new_session(event_log, "ses_race")
    await event_log.append("ses_race", None, [("assistant.message", {"n": 1})])
    async with sessionmaker() as db, db.begin():  # another process's write
        await repo.insert_events(
            db,
            [
                {
                    "session_id": "ses_race",
                    "seq": 3,
                    "run_id": None,
                    "type": "assistant.message",
                    "data": {"n": "other"},
                    "created_at": utcnow(),
                }
            ],
        )
    appended = await asyncio.gather(
        *(event_log.append("ses_race", None, [("assistant.message", {"n": n})]) for n in (2, 3))
    )
    assert [stored[0].seq for stored in appended] == [4, 5]
    async with sessionmaker() as db:
        events = await repo.list_events(db, "ses_race", 0, 10)
    assert [(e.seq, e.data.get("n")) for e in events] == [
        (1, None),
        (2, 1),
        (3, "other"),
        (4, 2),
        (5, 3),
    ]


async def test_unknown_event_type_is_refused(event_log: EventLog) -> None:
    with pytest.raises(ValueError, match="unknown event type"):
        await event_log.append("ses_none", None, [("not.a.type", {})])


async def _touch_nothing(db: AsyncSession) -> None:
    pass


@pytest.mark.parametrize("apply", [None, _touch_nothing], ids=["events-only", "with-apply"])
async def test_published_events_are_already_committed(
    event_log: EventLog, clean_db: str, apply: Apply | None
) -> None:
    """At the very moment a subscriber is handed an event, another connection can read
    it: the subscriber's `offer` (called synchronously by publish) blocks the loop while
    a thread with its own engine queries the database. Both write paths: events alone
    (one autocommitted INSERT on Postgres) and events with a state change (a transaction)."""
    await new_session(event_log, "ses_c1")
    sub = event_log.broker.subscribe("ses_c1")
    seen_at_receipt: list[tuple[int, list[int]]] = []
    offer = sub.offer

    def seqs_from_another_connection() -> list[int]:
        async def read() -> list[int]:
            engine = create_engine(clean_db)
            try:
                return await seqs_in_db(create_sessionmaker(engine), "ses_c1")
            finally:
                await engine.dispose()

        return asyncio.run(read())

    def offer_and_look(event: StoredEvent) -> None:
        with ThreadPoolExecutor(1) as pool:
            seen_at_receipt.append((event.seq, pool.submit(seqs_from_another_connection).result()))
        offer(event)

    sub.offer = offer_and_look  # type: ignore[method-assign]
    try:
        await event_log.append(
            "ses_c1",
            None,
            [("assistant.message", {"x": 1}), ("assistant.message", {"x": 2})],
            apply,
        )
        received = [await sub.get(2), await sub.get(2)]
        assert [event.seq for event in received if event is not None] == [2, 3]
        assert seen_at_receipt == [(2, [1, 2, 3]), (3, [1, 2, 3])]
    finally:
        sub.unsubscribe()


async def test_stuck_subscriber_does_not_block_and_catches_up(
    event_log: EventLog, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await new_session(event_log, "ses_slow")
    request = StreamRequest("ses_slow", after=0, follow=True)
    stream = stream_batches(sessionmaker, event_log.broker, request, wake_every=0.05)
    first = await anext(stream)  # replay done, subscribed; now stop reading
    assert [e.seq for e in first] == [1]
    # Queue size is 8: far more than that is published while the reader sleeps.
    for i in range(200):
        await event_log.append("ses_slow", None, [("assistant.message", {"i": i})])
    received = [1]
    while received[-1] < 201:
        received += [e.seq for e in await asyncio.wait_for(anext(stream), 5)]
    await stream.aclose()
    assert received == list(range(1, 202))
    assert event_log.broker.subscriber_count("ses_slow") == 0


async def test_queued_events_come_as_one_batch_and_each_frame_is_encoded_once(
    event_log: EventLog, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await new_session(event_log, "ses_batch")
    request = StreamRequest("ses_batch", after=0, follow=True)
    readers = [
        stream_batches(sessionmaker, event_log.broker, request, wake_every=0.05) for _ in range(2)
    ]
    for reader in readers:
        assert [e.seq for e in await anext(reader)] == [1]  # the replay; now subscribed
    for i in range(5):
        await event_log.append("ses_batch", None, [("assistant.message", {"i": i})])
    batches = [await asyncio.wait_for(anext(reader), 5) for reader in readers]
    for reader in readers:
        await reader.aclose()
    # Published while nobody read: each reader gets all five in one batch (one write).
    assert [[e.seq for e in batch] for batch in batches] == [[2, 3, 4, 5, 6]] * 2
    # Both readers hold the same event objects: the frame is encoded once for both.
    frames = [[sse_frame(e) for e in batch] for batch in batches]
    assert all(a is b for a, b in zip(*frames, strict=True))
    expected = ServerSentEvent(
        data=json.dumps(batches[0][0].to_json(), separators=(",", ":")),
        event="assistant.message",
        id="2",
    ).encode()
    assert frames[0][0] == expected
    assert event_log.broker.subscriber_count("ses_batch") == 0
