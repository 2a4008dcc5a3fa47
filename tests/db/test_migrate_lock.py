"""Migrations are safe when replicas start together (SPEC v2.1): on Postgres, `migrate()`
holds an advisory lock around the upgrade, so one process applies the migrations and the
others wait, then find the database current.

Postgres only, and only in the Postgres pass (TEST_DATABASE_URL set to Postgres): each
test creates a database of its own (`as_mig_<random>`) and drops it afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

import app.db.engine as engine_module
from app.db.engine import MIGRATION_LOCK_KEY, create_engine, migrate, migrations_current
from tests.processes import POSTGRES_ONLY

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "")

pytestmark = POSTGRES_ONLY

CLI = Path(sys.executable).with_name("agent-sessions")
REPLICAS = 4
WAIT_S = 30.0


def _plain(url: str, database: str) -> str:
    """`url` pointed at `database`, for asyncpg (no SQLAlchemy driver name)."""
    parsed = make_url(url).set(drivername="postgresql", database=database)
    return parsed.render_as_string(hide_password=False)


@pytest.fixture
async def fresh_database() -> AsyncIterator[str]:
    """The SQLAlchemy URL of a new, empty Postgres database, dropped afterwards."""
    name = f"as_mig_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(_plain(TEST_DATABASE_URL, "postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = make_url(TEST_DATABASE_URL).set(drivername="postgresql+asyncpg", database=name)
            yield url.render_as_string(hide_password=False)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def _connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(_plain(url, make_url(url).database or ""))


async def _lock_waiters(conn: asyncpg.Connection) -> int:
    """Sessions waiting for the migration lock in this connection's database."""
    count: int = await conn.fetchval(
        """SELECT count(*) FROM pg_locks
           WHERE locktype = 'advisory' AND NOT granted
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
             AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 1""",
        (MIGRATION_LOCK_KEY >> 32) & 0xFFFFFFFF,
        MIGRATION_LOCK_KEY & 0xFFFFFFFF,
    )
    return count


async def _until(what: str, check: object, within: float = WAIT_S) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def _at_head(url: str) -> bool:
    engine = create_engine(url)
    try:
        return await migrations_current(engine)
    finally:
        await engine.dispose()


async def _lock_is_free(conn: asyncpg.Connection) -> bool:
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATION_LOCK_KEY):
        return False
    await conn.fetchval("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return True


def _cli_env(url: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("API_KEYS", "ALLOW_NO_AUTH", "DATABASE_URL", "PYTHONPATH")
    }
    env["DATABASE_URL"] = url
    return env


async def test_replicas_migrating_together_all_succeed_one_at_a_time(
    fresh_database: str, tmp_path: Path
) -> None:
    holder = await _connect(fresh_database)
    procs: list[asyncio.subprocess.Process] = []
    try:
        # Held here while the replicas start, so that all of them are sure to meet it:
        # they wait together, then go one after another once it is released.
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATION_LOCK_KEY)
        for _ in range(REPLICAS):
            procs.append(
                await asyncio.create_subprocess_exec(
                    str(CLI),
                    "migrate",
                    env=_cli_env(fresh_database),
                    cwd=tmp_path,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    start_new_session=True,
                )
            )

        async def all_waiting() -> bool:
            for proc in procs:
                if proc.returncode is not None:
                    out, err = await proc.communicate()
                    raise AssertionError(f"migrate ended early:\n{out.decode()}{err.decode()}")
            return await _lock_waiters(holder) == REPLICAS

        await _until(f"{REPLICAS} processes waiting for the migration lock", all_waiting)
        assert await holder.fetchval("SELECT to_regclass('alembic_version')") is None
        await holder.fetchval("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)

        results = await asyncio.wait_for(
            asyncio.gather(*(proc.communicate() for proc in procs)), WAIT_S
        )
        for proc, (out, err) in zip(procs, results, strict=True):
            assert proc.returncode == 0, out.decode() + err.decode()
            assert "migrated to head" in out.decode()
        assert await _at_head(fresh_database)
        assert await holder.fetchval("SELECT count(*) FROM alembic_version") == 1
        assert await _lock_is_free(holder)
    finally:
        for proc in procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        await holder.close()


async def test_migrate_waits_while_another_connection_holds_the_lock(
    fresh_database: str,
) -> None:
    holder = await _connect(fresh_database)
    task: asyncio.Task[None] | None = None
    try:
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATION_LOCK_KEY)
        task = asyncio.create_task(migrate(fresh_database))

        async def waiting() -> bool:
            if task.done():
                task.result()
                raise AssertionError("migrate() finished while the lock was held")
            return await _lock_waiters(holder) == 1

        await _until("migrate() to wait for the lock", waiting)
        await asyncio.sleep(0.5)
        assert not task.done()
        assert await holder.fetchval("SELECT to_regclass('alembic_version')") is None

        await holder.fetchval("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
        await asyncio.wait_for(task, WAIT_S)
        assert await _at_head(fresh_database)
        assert await _lock_is_free(holder)
        # Once current, another migrate() takes the lock, finds nothing to do, and frees it.
        await asyncio.wait_for(migrate(fresh_database), WAIT_S)
        assert await _lock_is_free(holder)
    finally:
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await holder.close()


async def test_a_failed_migration_releases_the_lock(
    fresh_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_upgrade(*args: object, **kwargs: object) -> None:
        raise RuntimeError("migration failed")

    monkeypatch.setattr(engine_module, "upgrade", broken_upgrade)
    with pytest.raises(RuntimeError, match="migration failed"):
        await migrate(fresh_database)
    holder = await _connect(fresh_database)
    try:
        assert await _lock_is_free(holder)
    finally:
        await holder.close()
