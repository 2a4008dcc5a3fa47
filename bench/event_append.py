"""Event append throughput, sustained: the service's group-commit EventLog against
two baselines on the same database in the same run.

    .venv/bin/python -m bench.event_append [--seconds 30] [--sessions 50] [--rate 5000]
                                           [--database-url URL]

Passes, each `--seconds` long:
1. raw driver: `executemany` of 512-row batches, one transaction each, from one
   writer (sqlite3 on SQLite, asyncpg on Postgres): the ceiling for this schema.
2. naive SQLAlchemy: one session + commit per event (serialized, as SQLite needs).
3. EventLog, closed loop: `--sessions` writers, each awaiting its append, with one
   live subscriber per session checking seq order: the maximum sustained rate.
4. EventLog, open loop at `--rate` events/s (paced by the clock, not by commits):
   append -> visible-to-subscriber latency at the target load. Measured at a
   saturating load instead, the figure would be queueing time in the writer's
   backlog, not visibility.

The writers, the writer task and the subscribers share one event loop, as in
the service (the EventLog and the Broker live on the service's loop). Exits
non-zero if an event is lost, duplicated or out of order. The script migrates
the database and deletes every row of the service's tables around each pass:
never point it at a database you need. Default: a fresh SQLite file (WAL).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text

from app.db.engine import checkpoint_wal, create_engine, create_sessionmaker, migrate
from app.db.models import Base, EventRow, utcnow
from app.events.broker import Broker
from app.events.log import EventLog
from tests.events.conftest import session_row

PAYLOAD_TEXT = "x" * 64
RAW_BATCH = 512


async def reset(url: str) -> None:
    engine = create_engine(url)
    async with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            await conn.execute(text(f"DELETE FROM {table.name}"))
    await engine.dispose()


async def add_sessions(url: str, sessions: int) -> None:
    engine = create_engine(url)
    maker = create_sessionmaker(engine)
    async with maker() as db, db.begin():
        db.add_all([session_row(f"ses_{i}", tenant="bench") for i in range(sessions)])
    await engine.dispose()


async def count_events(url: str) -> int:
    engine = create_engine(url)
    async with engine.connect() as conn:
        stored = (await conn.execute(text("SELECT count(*) FROM events"))).scalar_one()
    await engine.dispose()
    return int(stored)


def raw_sqlite(path: str, seconds: float) -> int:
    """One writer, sqlite3 executemany, 512 rows per transaction, for `seconds`."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    sql = (
        "INSERT INTO events (session_id, seq, run_id, type, data, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)"
    )
    seq = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        now = datetime.now(UTC).isoformat()
        rows = []
        for _ in range(RAW_BATCH):
            seq += 1
            data = json.dumps({"i": seq, "text": PAYLOAD_TEXT})
            rows.append(("ses_0", seq, None, "assistant.message", data, now))
        conn.execute("BEGIN")
        conn.executemany(sql, rows)
        conn.execute("COMMIT")
    conn.close()
    return seq


async def raw_postgres(url: str, seconds: float) -> int:
    """One writer, asyncpg executemany, 512 rows per transaction, for `seconds`."""
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    sql = (
        "INSERT INTO events (session_id, seq, run_id, type, data, created_at) "
        "VALUES ($1, $2, $3, $4, $5::jsonb, $6)"
    )
    seq = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        now = datetime.now(UTC)
        rows = []
        for _ in range(RAW_BATCH):
            seq += 1
            data = json.dumps({"i": seq, "text": PAYLOAD_TEXT})
            rows.append(("ses_0", seq, None, "assistant.message", data, now))
        async with conn.transaction():
            await conn.executemany(sql, rows)
    await conn.close()
    return seq


async def bench_raw(url: str, seconds: float) -> float:
    await add_sessions(url, 1)
    start = time.perf_counter()
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1]
        written = await asyncio.to_thread(raw_sqlite, path, seconds)
    else:
        written = await raw_postgres(url, seconds)
    elapsed = time.perf_counter() - start
    stored = await count_events(url)
    if stored != written:
        raise SystemExit(f"LOST OR DUPLICATED (raw): wrote {written}, stored {stored}")
    return written / elapsed


async def bench_naive(url: str, sessions: int, seconds: float) -> float:
    await add_sessions(url, sessions)
    engine = create_engine(url)
    maker = create_sessionmaker(engine)
    lock = asyncio.Lock()  # one writer at a time, as SQLite requires anyway
    deadline = time.perf_counter() + seconds
    written = [0] * sessions

    async def writer(index: int) -> None:
        sid = f"ses_{index}"
        while time.perf_counter() < deadline:
            async with lock, maker() as db:
                db.add(
                    EventRow(
                        session_id=sid,
                        seq=written[index] + 1,
                        run_id=None,
                        type="assistant.message",
                        data={"i": written[index], "text": PAYLOAD_TEXT},
                        created_at=utcnow(),
                    )
                )
                await db.commit()
            written[index] += 1

    start = time.perf_counter()
    await asyncio.gather(*(writer(i) for i in range(sessions)))
    elapsed = time.perf_counter() - start
    await engine.dispose()
    stored = await count_events(url)
    if stored != sum(written):
        raise SystemExit(f"LOST OR DUPLICATED (naive): wrote {sum(written)}, stored {stored}")
    return sum(written) / elapsed


class EventLogPass:
    """An EventLog with one checking subscriber per session; `sent_at` keyed by (sid, i)."""

    def __init__(self, url: str, sessions: int) -> None:
        self.url = url
        self.sessions = sessions
        self.engine = create_engine(url)
        self.broker = Broker(queue_size=1_000_000)
        self.log = EventLog(create_sessionmaker(self.engine), self.broker)
        self.sent_at: dict[tuple[str, int], float] = {}
        self.latencies: list[float] = []
        self.delivered = 0
        self.errors: list[str] = []

    async def reader(self, index: int, done: asyncio.Event) -> None:
        sid = f"ses_{index}"
        sub = self.broker.subscribe(sid)
        last = 0
        while True:
            event = await sub.get(0.2)
            if event is None:
                if sub.lagged:
                    self.errors.append(f"{sid}: subscriber lagged")
                    return
                if done.is_set() and sub.queue.empty():
                    return
                continue
            if event.seq != last + 1:
                self.errors.append(f"{sid}: gap or duplicate {last} -> {event.seq}")
            last = event.seq
            self.latencies.append(time.perf_counter() - self.sent_at.pop((sid, event.data["i"])))
            self.delivered += 1

    async def run(self, writers: Any) -> tuple[float, int]:
        await add_sessions(self.url, self.sessions)
        self.log.start()
        # The service's own background WAL checkpoints (lifespan.py), as in production.
        wal = asyncio.create_task(checkpoint_wal(self.engine))
        done = asyncio.Event()
        readers = [asyncio.create_task(self.reader(i, done)) for i in range(self.sessions)]
        start = time.perf_counter()
        written: int = await writers
        elapsed = time.perf_counter() - start
        await self.log.stop()
        wal.cancel()
        done.set()
        await asyncio.gather(*readers)
        await self.engine.dispose()
        stored = await count_events(self.url)
        if self.errors or stored != written or self.delivered != written:
            raise SystemExit(
                f"LOST OR DUPLICATED (EventLog): wrote {written}, stored {stored}, "
                f"delivered {self.delivered}; {self.errors[:5]}"
            )
        return written / elapsed, written

    async def closed_loop(self, seconds: float) -> int:
        deadline = time.perf_counter() + seconds
        counts = [0] * self.sessions

        async def writer(index: int) -> None:
            sid = f"ses_{index}"
            while time.perf_counter() < deadline:
                i = counts[index]
                self.sent_at[(sid, i)] = time.perf_counter()
                await self.log.append(
                    sid, None, [("assistant.message", {"i": i, "text": PAYLOAD_TEXT})]
                )
                counts[index] += 1

        await asyncio.gather(*(writer(i) for i in range(self.sessions)))
        return sum(counts)

    async def open_loop(self, seconds: float, rate: float) -> int:
        """Append `rate` events/s spread over the sessions, on a 1 ms clock; appends
        are not awaited one by one (as many runs would each await their own)."""
        pending: set[asyncio.Task[Any]] = set()
        start = time.perf_counter()
        sent = 0
        total = int(seconds * rate)
        while sent < total:
            due = min(total, int((time.perf_counter() - start) * rate) + 1)
            while sent < due:
                sid = f"ses_{sent % self.sessions}"
                i = sent // self.sessions
                self.sent_at[(sid, i)] = time.perf_counter()
                task = asyncio.create_task(
                    self.log.append(
                        sid, None, [("assistant.message", {"i": i, "text": PAYLOAD_TEXT})]
                    )
                )
                pending.add(task)
                task.add_done_callback(pending.discard)
                sent += 1
            await asyncio.sleep(0.001)
        await asyncio.gather(*pending)
        return sent


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def ms(values: list[float], p: float) -> str:
    return f"{pct(values, p) * 1000:.1f}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--rate", type=float, default=5000.0, help="open-loop offered events/s")
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    url = args.database_url or f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
    await migrate(url)

    await reset(url)
    raw = await bench_raw(url, args.seconds)
    await reset(url)
    naive = await bench_naive(url, args.sessions, args.seconds)
    await reset(url)
    closed = EventLogPass(url, args.sessions)
    rate, stored = await closed.run(closed.closed_loop(args.seconds))
    await reset(url)
    paced = EventLogPass(url, args.sessions)
    offered_rate, offered_stored = await paced.run(paced.open_loop(args.seconds, args.rate))
    await reset(url)

    backend = url.split(":", 1)[0]
    raw_name = "sqlite3" if backend.startswith("sqlite") else "asyncpg"
    print(
        f"database: {backend}; {args.seconds:.0f} s per pass; "
        f"{args.sessions} concurrent sessions for SQLAlchemy and EventLog"
    )
    print(f"{'':44}{'events/s':>10}  vs naive  vs raw")
    print(f"{'baseline: raw ' + raw_name + ' executemany (512/txn)':44}{raw:>10,.0f}")
    print(f"{'baseline: SQLAlchemy session+commit per event':44}{naive:>10,.0f}")
    print(
        f"{'EventLog, closed loop (max sustained)':44}{rate:>10,.0f}"
        f"  x{rate / naive:<7.1f} x{rate / raw:.2f}"
    )
    lat = closed.latencies
    print(
        f"  append -> visible, closed loop ({stored:,} events): p50 "
        f"{statistics.median(lat) * 1000:.1f} ms, p99 {ms(lat, 99)} ms, max {ms(lat, 100)} ms"
    )
    lat = paced.latencies
    print(
        f"EventLog, open loop at {args.rate:,.0f}/s offered: {offered_rate:,.0f}/s sustained "
        f"({offered_stored:,} events); append -> visible p50 "
        f"{statistics.median(lat) * 1000:.1f} ms, p99 {ms(lat, 99)} ms, max {ms(lat, 100)} ms"
    )
    print("no event lost, duplicated or out of order")


if __name__ == "__main__":
    asyncio.run(main())
