"""Event append throughput: the service's group-commit EventLog against a naive
SQLAlchemy session + commit per event, on the same database in the same run.

    .venv/bin/python -m bench.event_append [--events 20000] [--sessions 50] [--database-url URL]

Prints events/s for both and the ratio, plus append -> subscriber visibility
latency (p50/p99) for the EventLog. Exits non-zero if an event is lost or
duplicated. Default database: a fresh SQLite file (WAL) in a temp directory.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import text

from app.db.engine import create_engine, create_sessionmaker, migrate
from app.db.models import Base, EventRow, SessionRow, utcnow
from app.events.broker import Broker
from app.events.log import EventLog


async def reset(url: str) -> None:
    engine = create_engine(url)
    async with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            await conn.execute(text(f"DELETE FROM {table.name}"))
    await engine.dispose()


def session_row(sid: str) -> SessionRow:
    return SessionRow(
        id=sid,
        tenant="bench",
        status="idle",
        provider="anthropic",
        model="m",
        computer={},
        options={},
        safety={},
        metadata_={},
        usage={},
        agent_state={},
        last_event_seq=0,
    )


async def bench_event_log(
    url: str, sessions: int, per_session: int
) -> tuple[float, list[float], int]:
    engine = create_engine(url)
    maker = create_sessionmaker(engine)
    broker = Broker(queue_size=per_session + 10)
    log = EventLog(maker, broker)
    log.start()
    async with maker() as db, db.begin():
        db.add_all([session_row(f"ses_{i}") for i in range(sessions)])
    subs = [broker.subscribe(f"ses_{i}") for i in range(sessions)]
    latencies: list[float] = []
    sent_at: dict[tuple[str, int], float] = {}

    async def reader(index: int) -> int:
        sub = subs[index]
        got = 0
        last = 0
        while got < per_session:
            event = await sub.get(10)
            assert event is not None, "subscriber starved"
            assert event.seq == last + 1, f"gap or duplicate: {last} -> {event.seq}"
            last = event.seq
            latencies.append(time.perf_counter() - sent_at[(event.session_id, event.data["i"])])
            got += 1
        return got

    async def writer(index: int) -> None:
        sid = f"ses_{index}"
        for i in range(per_session):
            sent_at[(sid, i)] = time.perf_counter()
            await log.append(sid, None, [("assistant.message", {"i": i, "text": "x" * 64})])

    readers = [asyncio.create_task(reader(i)) for i in range(sessions)]
    start = time.perf_counter()
    await asyncio.gather(*(writer(i) for i in range(sessions)))
    elapsed = time.perf_counter() - start
    delivered = sum(await asyncio.gather(*readers))
    await log.stop()
    async with maker() as db:
        stored = (await db.execute(text("SELECT count(*) FROM events"))).scalar_one()
    await engine.dispose()
    if stored != sessions * per_session or delivered != stored:
        raise SystemExit(f"LOST OR DUPLICATED: stored {stored}, delivered {delivered}")
    return sessions * per_session / elapsed, latencies, stored


async def bench_naive(url: str, sessions: int, per_session: int) -> float:
    engine = create_engine(url)
    maker = create_sessionmaker(engine)
    async with maker() as db, db.begin():
        db.add_all([session_row(f"ses_{i}") for i in range(sessions)])
    lock = asyncio.Lock()  # one writer at a time, as SQLite requires anyway

    async def writer(index: int) -> None:
        sid = f"ses_{index}"
        for i in range(per_session):
            async with lock, maker() as db:
                db.add(
                    EventRow(
                        session_id=sid,
                        seq=i + 1,
                        run_id=None,
                        type="assistant.message",
                        data={"i": i, "text": "x" * 64},
                        created_at=utcnow(),
                    )
                )
                await db.commit()

    start = time.perf_counter()
    await asyncio.gather(*(writer(i) for i in range(sessions)))
    elapsed = time.perf_counter() - start
    await engine.dispose()
    return sessions * per_session / elapsed


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    url = args.database_url or f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
    per_session = args.events // args.sessions
    await migrate(url)

    await reset(url)
    naive = await bench_naive(url, args.sessions, per_session)
    await reset(url)
    rate, latencies, stored = await bench_event_log(url, args.sessions, per_session)
    await reset(url)

    backend = url.split(":", 1)[0]
    print(f"database: {backend}; {stored} events over {args.sessions} concurrent sessions")
    print(f"{'':34}{'events/s':>12}")
    print(f"{'baseline: session+commit per event':34}{naive:>12,.0f}")
    print(f"{'EventLog (group commit)':34}{rate:>12,.0f}   x{rate / naive:.1f}")
    print(
        f"append -> subscriber visible: p50 {statistics.median(latencies) * 1000:.1f} ms, "
        f"p99 {pct(latencies, 99) * 1000:.1f} ms; no gaps, no duplicates"
    )


if __name__ == "__main__":
    asyncio.run(main())
