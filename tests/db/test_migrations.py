"""The migrations build exactly the schema of app/db/models.py, and undo it.

Runs on a fresh SQLite file always, and on Postgres (in a schema of its own,
dropped afterwards) when TEST_DATABASE_URL points at Postgres. Also checks the
`agent-sessions` command from another directory: `migrate`, and `serve`
refusing to listen publicly without API keys.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.db.engine import (
    alembic_config,
    async_url,
    create_engine,
    downgrade,
    migrations_current,
    upgrade,
)
from app.db.models import Base

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "")
POSTGRES_URL = TEST_DATABASE_URL if TEST_DATABASE_URL.startswith("postgres") else ""
CLI_TIMEOUT_S = 60


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgres",
            marks=pytest.mark.skipif(
                not POSTGRES_URL, reason="TEST_DATABASE_URL does not point at Postgres"
            ),
        ),
    ]
)
async def fresh_engine(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[AsyncEngine]:
    """An engine on an empty database: a new SQLite file, or a new Postgres schema."""
    if request.param == "sqlite":
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db' / 'fresh.db'}")
        try:
            yield engine
        finally:
            await engine.dispose()
        return

    # A schema of its own keeps this test away from the tables the rest of the
    # suite uses in the same database, and is dropped whole afterwards.
    schema = f"migration_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    async with admin.begin() as connection:
        await connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    engine = create_async_engine(
        async_url(POSTGRES_URL), connect_args={"server_settings": {"search_path": schema}}
    )
    try:
        yield engine
    finally:
        await engine.dispose()
        async with admin.begin() as connection:
            await connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.dispose()


def _schema_diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, Base.metadata))


def _table_names(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_upgrade_matches_models_and_downgrade_undoes_it(fresh_engine: AsyncEngine) -> None:
    assert not await migrations_current(fresh_engine)

    await upgrade(fresh_engine)
    assert await migrations_current(fresh_engine)
    async with fresh_engine.connect() as connection:
        assert await connection.run_sync(_schema_diff) == []
        tables = await connection.run_sync(_table_names)
    assert set(Base.metadata.tables) <= tables

    await downgrade(fresh_engine, "base")
    assert not await migrations_current(fresh_engine)
    async with fresh_engine.connect() as connection:
        assert await connection.run_sync(_table_names) <= {"alembic_version"}

    # Down then up again: the downgrade left nothing behind that blocks a re-run.
    await upgrade(fresh_engine)
    async with fresh_engine.connect() as connection:
        assert await connection.run_sync(_schema_diff) == []


async def test_upgrade_is_idempotent(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'twice.db'}")
    try:
        await upgrade(engine)
        await upgrade(engine)
        assert await migrations_current(engine)
    finally:
        await engine.dispose()


async def test_sqlite_connections_get_the_service_pragmas(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'nested' / 'dir' / 'p.db'}")
    try:
        async with engine.connect() as connection:
            pragmas = {
                name: (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
    finally:
        await engine.dispose()
    # synchronous: 1 is NORMAL.
    assert pragmas == {
        "journal_mode": "wal",
        "synchronous": 1,
        "foreign_keys": 1,
        "busy_timeout": 5000,
    }


def _cli() -> list[str]:
    """The installed console script, or `python -m app` when the scripts dir is not on disk."""
    script = Path(sys.executable).with_name("agent-sessions")
    if script.exists():
        return [str(script)]
    found = shutil.which("agent-sessions")
    return [found] if found else [sys.executable, "-m", "app"]


def _cli_env(**overrides: str) -> dict[str, str]:
    # Drop what could leak from the developer's shell into the child's settings.
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("API_KEYS", "ALLOW_NO_AUTH", "DATABASE_URL", "PYTHONPATH")
    }
    env.update(overrides)
    return env


def _run_cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, env=_cli_env(**env), capture_output=True, text=True, timeout=CLI_TIMEOUT_S
    )


def _stored_revisions(db_file: Path) -> set[str]:
    with closing(sqlite3.connect(db_file)) as connection:
        return {row[0] for row in connection.execute("SELECT version_num FROM alembic_version")}


def test_cli_migrate_works_from_another_directory(tmp_path: Path) -> None:
    db_file = tmp_path / "data" / "cli.db"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = _run_cli(
        [*_cli(), "migrate"], elsewhere, DATABASE_URL=f"sqlite+aiosqlite:///{db_file}"
    )
    assert result.returncode == 0, result.stderr
    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    assert _stored_revisions(db_file) == heads


def test_python_dash_m_app_migrate(tmp_path: Path) -> None:
    db_file = tmp_path / "m.db"
    # A plain sqlite:/// URL, as people paste it: the service picks the async driver.
    result = _run_cli(
        [sys.executable, "-m", "app", "migrate"], tmp_path, DATABASE_URL=f"sqlite:///{db_file}"
    )
    assert result.returncode == 0, result.stderr
    assert _stored_revisions(db_file)


def test_cli_serve_refuses_public_host_without_api_keys(tmp_path: Path) -> None:
    db_file = tmp_path / "never.db"
    result = _run_cli(
        [*_cli(), "serve", "--host", "0.0.0.0", "--port", "8999"],
        tmp_path,
        DATABASE_URL=f"sqlite+aiosqlite:///{db_file}",
    )
    assert result.returncode != 0
    assert "API_KEYS" in result.stderr
    assert "ALLOW_NO_AUTH" in result.stderr
    # It refused before touching the database.
    assert not db_file.exists()


async def test_0002_drops_last_event_seq_and_its_downgrade_restores_the_values(
    fresh_engine: AsyncEngine,
) -> None:
    await upgrade(fresh_engine, "0001")
    async with fresh_engine.begin() as connection:
        await connection.exec_driver_sql(
            "INSERT INTO sessions (id, tenant, status, provider, model, computer, options, "
            "safety, metadata, last_event_seq, usage, agent_state, created_at, updated_at) "
            "VALUES ('ses_a', 't', 'idle', 'anthropic', 'm', '{}', '{}', '{}', '{}', 3, '{}', "
            "'{}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
        )
        for seq in (1, 2, 3):
            await connection.exec_driver_sql(
                "INSERT INTO events (session_id, seq, type, data, created_at) "
                f"VALUES ('ses_a', {seq}, 'run.queued', '{{}}', CURRENT_TIMESTAMP)"
            )
    await upgrade(fresh_engine)
    async with fresh_engine.connect() as connection:
        assert await connection.run_sync(_schema_diff) == []
        columns = await connection.run_sync(
            lambda c: {col["name"] for col in inspect(c).get_columns("sessions")}
        )
    assert "last_event_seq" not in columns

    await downgrade(fresh_engine, "0001")
    async with fresh_engine.connect() as connection:
        rows = await connection.exec_driver_sql("SELECT id, last_event_seq FROM sessions")
        assert rows.all() == [("ses_a", 3)]


async def test_the_database_refuses_a_second_unfinished_run_in_a_session(
    fresh_engine: AsyncEngine,
) -> None:
    """Migration 0004: whichever replica races, a session holds one unfinished run."""
    await upgrade(fresh_engine)

    async def insert_run(connection: Any, run_id: str, status: str) -> None:
        await connection.exec_driver_sql(
            "INSERT INTO runs (id, session_id, status, input, turns, usage, created_at) "
            f"VALUES ('{run_id}', 'ses_a', '{status}', 'go', 0, '{{}}', CURRENT_TIMESTAMP)"
        )

    async with fresh_engine.begin() as connection:
        await connection.exec_driver_sql(
            "INSERT INTO sessions (id, tenant, status, provider, model, computer, options, "
            "safety, metadata, usage, agent_state, created_at, updated_at) "
            "VALUES ('ses_a', 't', 'idle', 'anthropic', 'm', '{}', '{}', '{}', '{}', '{}', "
            "'{}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
        )
        for n, status in enumerate(("completed", "failed", "cancelled", "running")):
            await insert_run(connection, f"run_{n}", status)  # ended runs do not count
    for status in ("queued", "running", "awaiting_safety_check"):
        with pytest.raises(IntegrityError):
            async with fresh_engine.begin() as connection:
                await insert_run(connection, "run_second", status)
    async with fresh_engine.begin() as connection:  # once it ended, the next may start
        await connection.exec_driver_sql("UPDATE runs SET status = 'completed'")
        await insert_run(connection, "run_next", "queued")


def test_alembic_cli_upgrades_and_downgrades_a_sqlite_database_holding_data(
    tmp_path: Path,
) -> None:
    # `python -m migrations` runs env.py's own engine (foreign keys on, no outer
    # transaction): a table rebuild of `sessions` would fail there once rows exist.
    db_file = tmp_path / "dev.db"
    url = f"sqlite+aiosqlite:///{db_file}"
    cli = [sys.executable, "-m", "migrations"]
    assert _run_cli([*cli, "upgrade", "0001"], tmp_path, DATABASE_URL=url).returncode == 0
    with closing(sqlite3.connect(db_file)) as connection, connection:
        connection.execute(
            "INSERT INTO sessions (id, tenant, status, provider, model, computer, options, "
            "safety, metadata, last_event_seq, usage, agent_state, created_at, updated_at) "
            "VALUES ('ses_a', 't', 'idle', 'anthropic', 'm', '{}', '{}', '{}', '{}', 1, '{}', "
            "'{}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
        )
        connection.execute(
            "INSERT INTO events (session_id, seq, type, data, created_at) "
            "VALUES ('ses_a', 1, 'run.queued', '{}', CURRENT_TIMESTAMP)"
        )
    for step in (["upgrade", "head"], ["downgrade", "0001"], ["upgrade", "head"]):
        result = _run_cli([*cli, *step], tmp_path, DATABASE_URL=url)
        assert result.returncode == 0, result.stderr
    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    assert _stored_revisions(db_file) == heads
    with closing(sqlite3.connect(db_file)) as connection:
        assert connection.execute("SELECT id FROM sessions").fetchall() == [("ses_a",)]
        leftovers = "SELECT name FROM sqlite_master WHERE name LIKE '_alembic%'"
        assert connection.execute(leftovers).fetchall() == []
