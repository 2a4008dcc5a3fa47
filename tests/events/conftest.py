"""The database, event log and session helpers the event-path tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.engine import create_engine, create_sessionmaker
from app.db.models import SessionRow
from app.events.broker import Broker
from app.events.log import EventLog


@pytest.fixture
async def sessionmaker(clean_db: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(clean_db)
    yield create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def event_log(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[EventLog]:
    log = EventLog(sessionmaker, Broker(queue_size=8), batch_max=64)
    log.start()
    yield log
    await log.stop()


def session_row(session_id: str, tenant: str = "t") -> SessionRow:
    """The least a session row needs (the benchmarks use it too)."""
    return SessionRow(
        id=session_id,
        tenant=tenant,
        status="idle",
        provider="anthropic",
        model="m",
        computer={},
        options={},
        safety={},
        metadata_={},
        usage={},
        agent_state={},
    )


async def new_session(log: EventLog, session_id: str) -> None:
    async def insert(db: AsyncSession) -> None:
        db.add(session_row(session_id))

    await log.append(session_id, None, [("session.created", {})], insert)
