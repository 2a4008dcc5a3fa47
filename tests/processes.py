"""Real `agent-sessions serve` processes for the tests that kill, stop and restart them
(tests/test_restart.py, tests/test_replicas.py): each on a free loopback port, in its own
process group, its output in a file; stopped by pid at teardown."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

SERVE = Path(sys.executable).with_name("agent-sessions")
# A cold start imports the SDKs and migrates; generous, because CI machines may be loaded.
START_TIMEOUT_S = 60.0
# Only these are inherited: a developer's own settings (API_KEYS, MAX_ACTIVE_RUNS...) must not
# leak into the service under test. The process also runs in a temporary directory, so it reads
# no `.env` file.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PLAYWRIGHT_BROWSERS_PATH")


# The tests that need several processes on one database run in the Postgres pass only.
POSTGRES_ONLY = pytest.mark.skipif(
    not os.environ.get("TEST_DATABASE_URL", "").startswith("postgres"),
    reason="needs Postgres: runs in the Postgres pass (TEST_DATABASE_URL)",
)
# The slow tests whose subject is not the database (a real browser on the viewer, the
# docs, EventSource) run once, in the SQLite pass, not again in the Postgres pass.
SQLITE_PASS_ONLY = pytest.mark.skipif(
    bool(os.environ.get("TEST_DATABASE_URL")),
    reason="runs once, in the SQLite pass (its subject is not the database)",
)


def service_env(database_url: str, anthropic_url: str, **settings: str) -> dict[str, str]:
    """The environment of a service process under test: only INHERITED_ENV from this one,
    the database, the fake Anthropic server and the fake computer, then `settings`."""
    env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
    env.update(
        DATABASE_URL=database_url,
        ANTHROPIC_API_KEY="test",
        ANTHROPIC_BASE_URL=anthropic_url,
        ENABLE_FAKE_COMPUTER="true",
        API_KEYS="",
        PYTHONUNBUFFERED="1",
    )
    env.update(settings)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


# ---- the service process ---------------------------------------------------------------------


class ServiceProcess:
    """One `agent-sessions serve` on a free loopback port; its stdout and stderr go to a file."""

    def __init__(self, env: dict[str, str], cwd: Path, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(SERVE), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Its own process group: teardown kills Playwright's driver with it, not only the
            # service (Chromium then exits on its own when the driver's pipe closes).
            start_new_session=True,
        )
        self.client = httpx.AsyncClient(base_url=self.url, timeout=10)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"the service exited with {self.proc.returncode} during start-up:\n"
                    + self.output()
                )
            with contextlib.suppress(httpx.TransportError):
                if (await self.client.get("/readyz")).status_code == 200:
                    return
            assert time.monotonic() < deadline, "the service did not become ready"
            await asyncio.sleep(0.05)

    def send(self, sig: signal.Signals) -> None:
        """SIGSTOP, SIGCONT, SIGTERM... to the service process itself."""
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL the service process itself (a crash: no cleanup code runs)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    async def wait_exit(self, within: float) -> int:
        deadline = time.monotonic() + within
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, f"the service still runs after {within} s"
            await asyncio.sleep(0.02)
        return self.proc.returncode

    async def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever is left of the group
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        await self.client.aclose()
        self._log.close()


@dataclass
class Launcher:
    """Starts service processes sharing one database and one fake Anthropic server."""

    env: dict[str, str]
    directory: Path
    processes: list[ServiceProcess] = field(default_factory=list)

    async def start(self, **overrides: str) -> ServiceProcess:
        index = len(self.processes) + 1
        service = ServiceProcess(
            {**self.env, **overrides}, self.directory, self.directory / f"service-{index}.log"
        )
        self.processes.append(service)
        await service.wait_ready()
        return service


async def all_events(client: httpx.AsyncClient, sid: str) -> list[dict[str, Any]]:
    """The whole event log as JSON pages."""
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        response = await client.get(
            f"/v1/sessions/{sid}/events", params={"format": "json", "after": after, "limit": 1000}
        )
        assert response.status_code == 200, response.text
        page = response.json()
        events.extend(page["data"])
        after = page["next_after"]
        if not page["has_more"]:
            return events
