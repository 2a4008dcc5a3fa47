"""Database engine, sessions and migrations.

`create_engine` tunes each backend (SQLite pragmas, a Postgres pool);
`migrate`, `upgrade`, `downgrade` and `migrations_current` drive Alembic
programmatically, so no alembic.ini is needed and the migrations that ship
inside the installed `migrations` package are found from any directory.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import aiosqlite
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import event, inspect, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

import migrations

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent
# Revisions are named by date so that `ls migrations/versions` reads as a history.
REVISION_FILE_TEMPLATE = "%(year)d_%(month).2d_%(day).2d_%(rev)s_%(slug)s"

SQLITE_BUSY_TIMEOUT_MS = 5000
# Runs hold a connection only around a step's commit, so a small pool serves
# MAX_ACTIVE_RUNS runs plus the API; overflow absorbs bursts of SSE replays.
POSTGRES_POOL_SIZE = 10
POSTGRES_MAX_OVERFLOW = 20


def async_url(url: str) -> URL:
    """Parse `url`, swapping plain driver names for the async drivers the service uses."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    return parsed


def create_engine(url: str) -> AsyncEngine:
    """An async engine for SQLite (aiosqlite) or Postgres (asyncpg), tuned for the service."""
    parsed = async_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _create_sqlite_engine(parsed)
    if backend == "postgresql":
        return create_async_engine(
            parsed,
            pool_size=POSTGRES_POOL_SIZE,
            max_overflow=POSTGRES_MAX_OVERFLOW,
            # A restarted Postgres leaves dead connections in the pool; test before use.
            pool_pre_ping=True,
        )
    return create_async_engine(parsed)


def create_inline_writer_engine(url: str) -> AsyncEngine | None:
    """For a SQLite file, an engine for the event log's writer (the only task that
    writes) with one connection whose statements run on the event loop's
    thread (`InlineSqliteConnection`) instead of a round trip each to a
    connection thread: a step's commit is a dozen DBAPI calls (cursor, execute,
    fetch, close for each statement, then COMMIT), each a hop to aiosqlite's
    thread and back through the loop, which cost more than the SQL. A small
    write in WAL mode with synchronous=NORMAL does no fsync, and the writer does
    not wait for locks (it is the only writer; readers do not block it in WAL
    mode; checkpoints are PASSIVE), so a statement holds the loop for
    microseconds. Should another process hold the write lock, busy_timeout=0
    makes the statement fail at once and the event log redoes the batch on the
    main engine's threaded connection, which waits.
    None for other databases, an in-memory SQLite (one connection) and URI
    options the plain path would not carry: the writer uses the main engine."""
    parsed = async_url(url)
    database = parsed.database or ""
    if (
        parsed.get_backend_name() != "sqlite"
        or _is_memory_database(parsed)
        or database.startswith("file:")
        or parsed.query
    ):
        return None

    def connect() -> aiosqlite.Connection:
        connection = InlineSqliteConnection(
            partial(sqlite3.connect, database, check_same_thread=False), iter_chunk_size=64
        )
        connection._thread.daemon = True  # as SQLAlchemy marks the threads it starts
        return connection

    writer = create_async_engine(
        parsed,
        async_creator=connect,
        pool_size=1,
        max_overflow=0,
        pool_reset_on_return=None,
    )
    event.listen(writer.sync_engine, "connect", _set_sqlite_writer_pragmas)
    return writer


class InlineSqliteConnection(aiosqlite.Connection):
    """An aiosqlite connection that runs each call at once on the calling (event
    loop) thread. aiosqlite's thread only opens and closes the sqlite3 connection
    (`check_same_thread=False`); calls never overlap, as one task uses it."""

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        return fn(*args, **kwargs)


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions whose objects stay readable after commit (responses are built after it)."""
    return async_sessionmaker(engine, expire_on_commit=False)


def _is_memory_database(url: URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or url.query.get("mode") == "memory"


def _create_sqlite_engine(url: URL) -> AsyncEngine:
    database = url.database or ""
    if not _is_memory_database(url) and not database.startswith("file:"):
        # SQLite creates the file but not its directory (./data on a fresh checkout).
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    # No rollback when a connection goes back to the pool: every connection is used
    # through a Session or an engine connection, whose close already rolls back what
    # it left open, and with aiosqlite each statement (that one too) is a round trip
    # to the connection's thread, about a tenth of a small commit's cost.
    engine = create_async_engine(url, pool_reset_on_return=None)
    event.listen(engine.sync_engine, "connect", _set_sqlite_pragmas)
    return engine


def _set_sqlite_pragmas(dbapi_connection: Any, _connection_record: Any) -> None:
    # Per connection, before any transaction: journal_mode cannot change inside one.
    # WAL lets SSE readers proceed while a run writes; NORMAL is durable in WAL
    # mode except for the last commits on power loss; busy_timeout waits for the
    # writer lock instead of failing at once with "database is locked".
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


# The writer's own checkpoint would run on the event loop's thread: it is left to
# the background checkpoint, with a large automatic one only as a backstop.
WRITER_WAL_AUTOCHECKPOINT_PAGES = 10_000


def _set_sqlite_writer_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    _set_sqlite_pragmas(dbapi_connection, connection_record)
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA wal_autocheckpoint={WRITER_WAL_AUTOCHECKPOINT_PAGES}")
        # Never wait for a lock on the loop's thread: another process holding the
        # write lock makes the statement fail at once, and the event log does the
        # batch again on the threaded connection, which waits (busy_timeout).
        cursor.execute("PRAGMA busy_timeout=0")
    finally:
        cursor.close()


def is_sqlite_busy(exc: BaseException) -> bool:
    """Whether `exc` (SQLAlchemy's wrapper or the driver's) is SQLite's "database is locked"."""
    orig = getattr(exc, "orig", exc)
    return isinstance(orig, sqlite3.OperationalError) and (
        getattr(orig, "sqlite_errorname", "") in ("SQLITE_BUSY", "SQLITE_LOCKED")
        or "database is locked" in str(orig)
    )


WAL_CHECKPOINT_EVERY_S = 1.0


async def checkpoint_wal(engine: AsyncEngine, every_s: float = WAL_CHECKPOINT_EVERY_S) -> None:
    """Copy SQLite's write-ahead log into the database every `every_s` s from a
    connection of its own, until cancelled (a no-op on other databases).

    SQLite otherwise checkpoints inside the commit that fills the log past 1,000
    pages: that commit, and with it every event waiting in the writer's batch,
    then waits for the copy and its fsync (tens of ms, the tail of append ->
    visible). A PASSIVE checkpoint takes no writer lock, so commits go on while
    it runs, and the log never grows far enough for a commit to do it."""
    if engine.dialect.name != "sqlite" or _is_memory_database(engine.url):
        return
    while True:
        await asyncio.sleep(every_s)
        try:
            async with engine.connect() as connection:
                await connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
        except Exception as exc:  # a busy or locked database: try again next time
            log.debug("WAL checkpoint skipped: %r", exc)


def alembic_config(url: str | None = None) -> Config:
    """An Alembic Config built in code: script_location is the installed `migrations` package.

    `url` is used only when env.py has to open its own connection (the alembic
    CLI through `python -m migrations`); `upgrade`/`downgrade` hand it one.
    """
    config = Config()
    # Config values go through ConfigParser interpolation: a literal % must be doubled.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.set_main_option("file_template", REVISION_FILE_TEMPLATE.replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    if url is not None:
        config.attributes["url"] = url
    return config


# The key of the Postgres advisory lock that serializes `migrate` across processes:
# the first 8 bytes of sha256(b"agent-sessions:migrate"), as a signed 64-bit integer.
MIGRATION_LOCK_KEY = -8809526518097545158


async def migrate(url: str) -> None:
    """Bring the database at `url` to the newest revision (`alembic upgrade head`).

    On Postgres, replicas that start together migrate one at a time: each holds a
    session-level advisory lock (`MIGRATION_LOCK_KEY`) on a connection of its own
    around the upgrade, so the first applies the migrations and the others wait,
    then find the database current. Postgres drops the lock with the connection
    should the process die. SQLite needs none (one process per database)."""
    engine = create_engine(url)
    try:
        if engine.dialect.name == "postgresql":
            async with _migration_lock(engine):
                await upgrade(engine)
        else:
            await upgrade(engine)
    finally:
        await engine.dispose()


@asynccontextmanager
async def _migration_lock(engine: AsyncEngine) -> AsyncIterator[None]:
    # Autocommit: the lock belongs to the session, so this connection needs no
    # transaction, and an idle one open for the whole wait could be timed out.
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        key = {"key": MIGRATION_LOCK_KEY}
        if not (await connection.execute(text("SELECT pg_try_advisory_lock(:key)"), key)).scalar():
            log.info("another process is migrating the database; waiting for it")
            await connection.execute(text("SELECT pg_advisory_lock(:key)"), key)
        try:
            yield
        finally:
            try:
                await connection.execute(text("SELECT pg_advisory_unlock(:key)"), key)
            except Exception:
                # Closing the connection releases the lock: never pool it still held.
                log.warning("could not release the migration lock; closing its connection")
                await connection.invalidate()


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """`alembic upgrade <revision>` on one connection of `engine`, in one transaction."""
    await _run_alembic(engine, command.upgrade, revision)


async def downgrade(engine: AsyncEngine, revision: str = "base") -> None:
    """`alembic downgrade <revision>` on one connection of `engine`, in one transaction."""
    await _run_alembic(engine, command.downgrade, revision)


async def migrations_current(engine: AsyncEngine) -> bool:
    """Whether the database is at the newest revision. Database errors propagate."""
    async with engine.connect() as connection:
        current = await connection.run_sync(_current_heads)
    return current == set(_script_heads())


def _current_heads(connection: Connection) -> set[str]:
    # Read directly, not through MigrationContext.configure, which logs two INFO lines
    # each time: /readyz asks on every probe.
    if not inspect(connection).has_table("alembic_version"):
        return set()
    return {row[0] for row in connection.exec_driver_sql("SELECT version_num FROM alembic_version")}


@lru_cache(maxsize=1)
def _script_heads() -> tuple[str, ...]:
    # Reading the revision files once is enough: they do not change under a running process.
    return tuple(ScriptDirectory.from_config(alembic_config()).get_heads())


AlembicCommand = Callable[[Config, str], None]


async def _run_alembic(engine: AsyncEngine, alembic_command: AlembicCommand, revision: str) -> None:
    config = alembic_config()
    sqlite = engine.dialect.name == "sqlite"
    async with engine.connect() as connection:
        if sqlite:
            await _begin_sqlite_migration(connection)
        try:
            await connection.run_sync(_invoke, config, alembic_command, revision)
            if sqlite:
                await _check_sqlite_foreign_keys(connection)
            await connection.commit()
        finally:
            if sqlite:
                await connection.rollback()
                await connection.exec_driver_sql("PRAGMA foreign_keys=ON")


async def _begin_sqlite_migration(connection: AsyncConnection) -> None:
    # Batch migrations rebuild tables (create copy, drop, rename); with foreign keys
    # on, dropping a referenced table fails or cascades, so SQLite's own recipe turns
    # them off for the migration and runs foreign_key_check before committing.
    # The pragma is a no-op inside a transaction, hence before the explicit BEGIN,
    # which makes the DDL atomic (the sqlite3 driver would otherwise autocommit DDL).
    await connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
    await connection.exec_driver_sql("BEGIN")


async def _check_sqlite_foreign_keys(connection: AsyncConnection) -> None:
    result = await connection.exec_driver_sql("PRAGMA foreign_key_check")
    violations = result.fetchall()
    if violations:
        raise RuntimeError(f"migration left foreign key violations: {violations[:10]}")


def _invoke(
    connection: Connection, config: Config, alembic_command: AlembicCommand, revision: str
) -> None:
    # env.py picks this connection up instead of opening its own.
    config.attributes["connection"] = connection
    alembic_command(config, revision)
