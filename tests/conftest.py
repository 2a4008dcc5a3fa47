"""Shared fixtures: the database under test, the fake provider, and the real service
served by uvicorn on a loopback port (tests talk to it over real HTTP).

The database is SQLite by default; `TEST_DATABASE_URL=postgresql+asyncpg://...`
runs the same suite on Postgres (the Makefile does both).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.db.engine import create_engine, migrate
from app.db.models import Base
from app.lifespan import Services
from app.main import create_app
from app.settings import Settings
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.kernel_server import FakeKernel
from tests.fakes.openai_server import FakeOpenAI

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    # pytest-randomly shuffles the tests and names its seed in the header, which -q hides and a
    # long run scrolls away: name it again at the end, where a failure is read.
    seed = getattr(config.option, "randomly_seed", None)
    if isinstance(seed, int) and getattr(config.option, "randomly_reorganize", False):
        terminalreporter.write_line(
            f"tests ran in random order: replay it with --randomly-seed={seed}"
            f" (make test PYTEST_ARGS=--randomly-seed={seed})"
        )


def _sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(scope="session")
async def database_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """SQLite: a file of this run. Postgres: a database of this run, created on the server
    TEST_DATABASE_URL names (through its database) and dropped at the end, so runs that
    share a server never share tables."""
    if not TEST_DATABASE_URL:
        yield _sqlite_url(tmp_path_factory.mktemp("db") / "test.db")
        return
    base = make_url(TEST_DATABASE_URL)
    name = f"{base.database or 'test'}_run_{os.getpid()}_{secrets.token_hex(3)}"
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(admin)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        connection = await asyncpg.connect(admin)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()


@pytest.fixture(scope="session")
async def migrated(database_url: str) -> str:
    await migrate(database_url)
    return database_url


async def wipe(database_url: str) -> None:
    """Empty every table (faster than re-migrating per test)."""
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
            if engine.dialect.name == "postgresql":
                await conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
            else:
                for name in tables:
                    await conn.execute(text(f"DELETE FROM {name}"))
    finally:
        await engine.dispose()


@pytest.fixture
async def clean_db(migrated: str) -> str:
    await wipe(migrated)
    return migrated


@pytest.fixture(scope="session")
def fake_anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture(scope="module")
def kernel_server() -> Iterator[FakeKernel]:
    """The fake Kernel API, one per test module (a module may override it)."""
    with FakeKernel() as fake:
        yield fake


@pytest.fixture
def kernel_fake(kernel_server: FakeKernel) -> FakeKernel:
    # reset() also puts back what an earlier test changed (create_delay...): no test sees
    # another's settings, in whatever order they run.
    kernel_server.reset()
    return kernel_server


@pytest.fixture
def anthropic_fake(fake_anthropic: FakeAnthropic) -> FakeAnthropic:
    # reset() also puts back what an earlier test changed (strict...): no test sees
    # another's settings, in whatever order they run.
    fake_anthropic.reset()
    return fake_anthropic


def make_settings(database_url: str, anthropic_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "anthropic_api_key": "test-key",
        "anthropic_base_url": anthropic_url,
        "enable_fake_computer": True,
        "provider_backoff_initial_s": 0.05,
        "provider_backoff_max_s": 0.2,
        "sse_ping_seconds": 15.0,
        "shutdown_grace_s": 2.0,
        "api_keys": "",
        # One name for every service a test starts, as for a replica restarted under
        # the same REPLICA_ID: a restart takes its runs back at once ("restart").
        "replica_id": "test-replica",
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Service:
    """A running service: its base URL, an HTTP client on it, and its internals."""

    url: str
    app: FastAPI
    client: httpx.AsyncClient

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services


class ServiceServer:
    """uvicorn serving create_app(settings) on a free loopback port, in this event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=3,
        )
        self.server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Service:
        self._task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("uvicorn stopped during start-up")
            await asyncio.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        self._client = httpx.AsyncClient(base_url=url, timeout=30)
        return Service(url, self.app, self._client)

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()
        self.server.should_exit = True
        if self._task is not None:
            await self._task


@pytest.fixture
async def service(clean_db: str, anthropic_fake: FakeAnthropic) -> AsyncIterator[Service]:
    async with ServiceServer(make_settings(clean_db, anthropic_fake.base_url)) as svc:
        yield svc


@pytest.fixture
async def openai_service(
    clean_db: str, anthropic_fake: FakeAnthropic
) -> AsyncIterator[tuple[Service, FakeOpenAI]]:
    """The service with its OpenAI client pointed at a strict fake Responses API."""
    with FakeOpenAI(strict=True) as fake:
        settings = make_settings(
            clean_db,
            anthropic_fake.base_url,
            openai_api_key="test-key",
            openai_base_url=fake.base_url,
        )
        async with ServiceServer(settings) as service:
            yield service, fake
