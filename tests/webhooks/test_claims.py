"""Two replicas' delivery workers on one Postgres database (each with its own engine, as
two processes would have): row locks give every attempt to exactly one of them, and a
session's events still go in seq order. The outbox rows are written by the real event
log, in the events' own transactions."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import webhooks as db_webhooks
from app.db.engine import create_engine, create_sessionmaker
from app.db.models import WebhookAttemptRow
from app.events.broker import Broker
from app.events.log import EventLog
from app.settings import Settings
from app.webhooks.service import Webhooks
from tests.events.conftest import session_row
from tests.fakes.webhook_receiver import SECRET, Received, WebhookReceiver
from tests.processes import POSTGRES_ONLY

pytestmark = POSTGRES_ONLY


@pytest.fixture
async def sessionmaker(clean_db: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(clean_db)
    yield create_sessionmaker(engine)
    await engine.dispose()


def settings(database_url: str, replica: str) -> Settings:
    return Settings(
        database_url=database_url,
        replica_id=replica,
        webhook_secret=SECRET,
        webhook_allow_private=True,
        webhook_retry_delays_s="0.05,0.05",
        webhook_poll_s=0.1,
        webhook_concurrency=8,
    )


async def seed(
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    url: str,
    sessions: int,
    per_session: int,
) -> list[str]:
    """Sessions whose webhook wants `assistant.message`, each with `per_session` of them."""
    log = EventLog(sessionmaker, Broker())
    log.outbox = Webhooks.from_settings(settings(database_url, "seed"), log).outbox
    log.start()
    ids = [f"ses_claims_{i:03d}" for i in range(sessions)]
    try:
        for sid in ids:

            async def insert(db: AsyncSession, sid: str = sid) -> None:
                row = session_row(sid)
                row.webhook = {"url": url, "events": ["assistant.message"]}
                db.add(row)

            await log.append(sid, None, [("session.created", {})], insert)
        for i in range(per_session):
            await asyncio.gather(
                *(log.append(sid, None, [("assistant.message", {"i": i})]) for sid in ids)
            )
    finally:
        await log.stop()
    return ids


async def test_two_replicas_never_send_the_same_attempt_twice(
    clean_db: str, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    sessions, per_session = 12, 10

    def first_fails(request: Received, so_far: list[Received]) -> int:
        seen = sum(r.headers["webhook-id"] == request.headers["webhook-id"] for r in so_far)
        return 500 if seen == 1 else 200

    with WebhookReceiver(first_fails) as receiver:
        await seed(clean_db, sessionmaker, receiver.url, sessions, per_session)
        replicas = []
        for name in ("replica-1", "replica-2"):  # each with its engine and event log
            engine = create_engine(clean_db)
            log = EventLog(create_sessionmaker(engine), Broker())
            log.start()
            hooks = Webhooks.from_settings(settings(clean_db, name), log)
            hooks.deliverer.start()
            replicas.append((engine, log, hooks))
        try:
            deadline = time.monotonic() + 60
            while True:
                async with sessionmaker() as db:
                    counts = await db_webhooks.delivery_counts(db)
                if counts.get("delivered") == sessions * per_session:
                    break
                assert time.monotonic() < deadline, counts
                await asyncio.sleep(0.1)
        finally:
            for engine, log, hooks in replicas:
                await hooks.deliverer.stop(5)
                await log.stop()
                await engine.dispose()
        got = receiver.snapshot()

    # Each event: its first attempt (500) and its second (200), each sent exactly once.
    per_id = Counter(r.headers["webhook-id"] for r in got)
    assert len(per_id) == sessions * per_session
    assert set(per_id.values()) == {2}
    async with sessionmaker() as db:
        rows = (await db.execute(select(WebhookAttemptRow))).scalars().all()
    assert sorted(Counter(r.delivery_id for r in rows).values()) == [2] * len(per_id)
    assert {r.attempt for r in rows} == {1, 2}
    assert {r.replica for r in rows} == {"replica-1", "replica-2"}  # both took a share
    # Per session: every attempt of an event before any of the next event's.
    by_session: dict[str, list[int]] = defaultdict(list)
    for request in got:
        event = request.verify()
        by_session[event["session_id"]].append(event["seq"])
    for seqs in by_session.values():
        assert seqs == sorted(seqs) and len(seqs) == 2 * per_session


async def test_concurrent_claims_take_different_rows_and_only_each_session_s_oldest(
    clean_db: str, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    ids = await seed(clean_db, sessionmaker, "http://127.0.0.1:9/", sessions=6, per_session=3)
    async with sessionmaker() as first, first.begin():
        mine = await db_webhooks.claim_due(first, "replica-1", 3, 60)
        # The first transaction still holds its rows' locks.
        async with sessionmaker() as second, second.begin():
            theirs = await db_webhooks.claim_due(second, "replica-2", 100, 60)
    assert len(mine) == 3 and len(theirs) == 3
    assert {c.session_id for c in mine}.isdisjoint(c.session_id for c in theirs)
    assert {c.session_id for c in mine + theirs} == set(ids)
    assert {c.event.seq for c in mine + theirs if c.event} == {2}  # each one's first message
    assert all(c.event and c.event.type == "assistant.message" for c in mine + theirs)
    assert {c.attempt for c in mine + theirs} == {1}
    async with sessionmaker() as third, third.begin():
        assert await db_webhooks.claim_due(third, "replica-3", 100, 60) == []  # all held
