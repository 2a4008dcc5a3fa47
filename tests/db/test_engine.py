"""The SQLite engine's background WAL checkpoints (engine.checkpoint_wal), and the
event log writer's inline SQLite engine (create_inline_writer_engine)."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import threading
from contextlib import closing
from pathlib import Path

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.db import repositories as repo
from app.db.engine import (
    WRITER_WAL_AUTOCHECKPOINT_PAGES,
    checkpoint_wal,
    create_engine,
    create_inline_writer_engine,
    create_sessionmaker,
    migrate,
)
from app.events.broker import Broker
from app.events.log import EventLog
from tests.events.conftest import new_session


async def test_checkpoints_move_committed_rows_into_the_database_file(tmp_path: Path) -> None:
    db_file = tmp_path / "wal.db"
    engine = create_engine(f"sqlite+aiosqlite:///{db_file}")
    try:
        async with engine.begin() as connection:
            await connection.exec_driver_sql("CREATE TABLE t (n INTEGER)")
            for n in range(200):
                await connection.exec_driver_sql(f"INSERT INTO t VALUES ({n})")

        def rows_in_main_file() -> int:
            # A copy of the database file alone (no -wal): only checkpointed rows.
            copy = tmp_path / "copy.db"
            shutil.copy(db_file, copy)
            with closing(sqlite3.connect(copy)) as conn:
                try:
                    return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])
                except sqlite3.OperationalError:  # the table itself is not there yet
                    return 0

        assert rows_in_main_file() == 0  # far under the 1,000-page automatic checkpoint
        task = asyncio.create_task(checkpoint_wal(engine, every_s=0.05))
        try:
            for _ in range(100):
                await asyncio.sleep(0.05)
                if rows_in_main_file() == 200:
                    break
        finally:
            task.cancel()
        assert rows_in_main_file() == 200
    finally:
        await engine.dispose()


async def test_nothing_to_do_for_an_in_memory_database() -> None:
    engine = create_engine("sqlite+aiosqlite://")
    try:
        await asyncio.wait_for(checkpoint_wal(engine, every_s=0.01), 1)  # returns at once
    finally:
        await engine.dispose()


def thread_ids(engine: AsyncEngine) -> None:
    """SQL function tid(): the id of the thread that runs the statement."""
    event.listen(
        engine.sync_engine,
        "connect",
        lambda dbapi_connection, _record: dbapi_connection.create_function(
            "tid", 0, threading.get_ident
        ),
    )


async def test_the_writer_runs_small_batches_on_the_loops_thread_and_large_ones_off_it(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'writer.db'}"
    await migrate(url)
    engine = create_engine(url)
    writer = create_inline_writer_engine(url)
    assert writer is not None
    for each in (engine, writer):
        thread_ids(each)
    log = EventLog(
        create_sessionmaker(engine), Broker(), inline=create_sessionmaker(writer), inline_max=2
    )
    log.start()
    try:
        async with writer.connect() as connection:
            pages = await connection.exec_driver_sql("PRAGMA wal_autocheckpoint")
            assert pages.scalar() == WRITER_WAL_AUTOCHECKPOINT_PAGES  # left to checkpoint_wal

        async def where(db: AsyncSession) -> int:
            return int(await db.scalar(text("SELECT tid()")))

        await new_session(log, "ses_w")
        _, alone = await log.transact("ses_w", None, [("assistant.message", {})], where)
        assert alone == threading.get_ident()
        many = await asyncio.gather(*(log.transact("ses_w", None, (), where) for _ in range(6)))
        threads = [thread for _, thread in many]
        assert threading.get_ident() not in threads[1:]  # the batch after the first
        async with create_sessionmaker(engine)() as db:
            seqs = [e.seq for e in await repo.list_events(db, "ses_w", 0, 10)]
        assert seqs == [1, 2]
    finally:
        await log.stop()
        await writer.dispose()
        await engine.dispose()


def test_other_databases_write_through_the_main_engine() -> None:
    for url in ("sqlite+aiosqlite://", "postgresql+asyncpg://postgres@127.0.0.1:5432/none"):
        assert create_inline_writer_engine(url) is None


async def test_a_write_lock_held_elsewhere_is_waited_for_off_the_loops_thread(
    tmp_path: Path,
) -> None:
    """Another process holding SQLite's write lock: the inline writer does not wait
    on the loop's thread (busy_timeout 0); the batch goes to the threaded engine,
    which waits, and the loop keeps running meanwhile."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'locked.db'}"
    await migrate(url)
    engine = create_engine(url)
    writer = create_inline_writer_engine(url)
    assert writer is not None
    log = EventLog(create_sessionmaker(engine), Broker(), inline=create_sessionmaker(writer))
    log.start()
    other = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    try:
        await new_session(log, "ses_l")
        async with writer.connect() as connection:
            timeout = await connection.exec_driver_sql("PRAGMA busy_timeout")
            assert timeout.scalar() == 0  # the inline connection fails at once
        other.execute("BEGIN IMMEDIATE")  # the write lock, as another process would hold it
        append = asyncio.create_task(log.append("ses_l", None, [("assistant.message", {})]))
        await asyncio.sleep(0.3)  # the loop runs while the append waits for the lock
        assert not append.done()
        other.execute("COMMIT")
        stored = await asyncio.wait_for(append, 10)
        assert [e.seq for e in stored] == [2]  # failed at once inline, then waited
    finally:
        other.close()
        await log.stop()
        await writer.dispose()
        await engine.dispose()


def test_uri_databases_write_through_the_main_engine(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///file:{tmp_path / 'uri.db'}?mode=rwc&uri=true"
    assert create_inline_writer_engine(url) is None
