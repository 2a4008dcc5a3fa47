"""The SQLite engine's background WAL checkpoints (engine.checkpoint_wal)."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

from app.db.engine import checkpoint_wal, create_engine


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
