"""SQLite stays one process (SPEC v2.1): a second `agent-sessions serve` on the same SQLite
file refuses to start and says to use Postgres; the lock dies with its process, so a
SIGKILLed service restarts at once.

The process tests run the real console script on a SQLite file of their own. They are
SQLite-only, so the whole module is skipped in the Postgres pass (it would only repeat).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.db.process_lock import (
    DatabaseInUseError,
    ProcessLockError,
    acquire_sqlite_lock,
    lock_path,
    sqlite_database_file,
)

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "")

pytestmark = pytest.mark.skipif(
    TEST_DATABASE_URL.startswith("postgres"),
    reason="SQLite-only: runs in the SQLite pass",
)

SERVE = Path(sys.executable).with_name("agent-sessions")
# A cold start imports the SDKs and migrates; generous, because CI machines may be loaded.
START_TIMEOUT_S = 60.0
# The refusal comes before migrations and uvicorn: only the imports take time.
REFUSAL_TIMEOUT_S = 20.0
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")


# ---- which file a URL locks ------------------------------------------------------------------


def test_memory_and_other_databases_have_nothing_to_lock() -> None:
    for url in (
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite+aiosqlite:///:memory:",
        "sqlite+aiosqlite:///file::memory:?uri=true",
        "sqlite+aiosqlite:///file:shared?mode=memory&cache=shared&uri=true",
        "sqlite+aiosqlite:///file:x.db?vfs=memdb&uri=true",
        "sqlite+aiosqlite:///file://otherhost/x.db?uri=true",
        "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
        "postgresql://postgres@127.0.0.1/test",
    ):
        assert sqlite_database_file(url) is None, url
        assert acquire_sqlite_lock(url) is None, url


def test_files_and_file_uris_lock_the_resolved_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "data" / "x.db"
    assert sqlite_database_file(f"sqlite+aiosqlite:///{db}") == db
    assert sqlite_database_file(f"sqlite:///{db}") == db
    assert sqlite_database_file("sqlite+aiosqlite:///data/x.db") == db
    assert sqlite_database_file("sqlite+aiosqlite:///file:data/x.db?uri=true") == db
    assert sqlite_database_file(f"sqlite+aiosqlite:///file://{db}?mode=rwc&uri=true") == db
    assert sqlite_database_file(f"sqlite+aiosqlite:///file://localhost{db}?uri=true") == db
    spaced = tmp_path / "a b.db"
    assert sqlite_database_file("sqlite+aiosqlite:///file:a%20b.db?uri=true") == spaced
    # Without uri=true the driver opens `file:...` as a plain file name, and so does the lock.
    assert sqlite_database_file("sqlite+aiosqlite:///file:y.db") == tmp_path / "file:y.db"
    # A symlink is followed: both spellings take one lock.
    (tmp_path / "link").symlink_to(tmp_path / "data", target_is_directory=True)
    assert sqlite_database_file("sqlite+aiosqlite:///link/x.db") == db
    assert lock_path(db) == tmp_path / "data" / "x.db.lock"


def test_the_lock_is_exclusive_until_released(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'new' / 'x.db'}"
    first = acquire_sqlite_lock(url)
    assert first is not None
    try:
        assert first.path == tmp_path / "new" / "x.db.lock"  # its directory was made
        assert first.path.read_text().strip() == str(os.getpid())
        # flock conflicts between two opens of the file even within one process.
        with pytest.raises(DatabaseInUseError) as refused:
            acquire_sqlite_lock(f"sqlite:///{tmp_path / 'new' / '.' / 'x.db'}")
        message = str(refused.value)
        assert "already in use" in message and f"pid {os.getpid()}" in message
        assert "Postgres" in message
    finally:
        first.release()
    again = acquire_sqlite_lock(url)
    assert again is not None
    again.release()


def test_an_unwritable_place_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ProcessLockError, match="cannot create the lock file"):
        acquire_sqlite_lock(f"sqlite+aiosqlite:///{blocker / 'x.db'}")


# ---- real processes --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Processes:
    """`agent-sessions serve` processes, each in its own process group, killed at the end."""

    def __init__(self, tmp_path: Path, database_url: str) -> None:
        self.tmp_path = tmp_path
        self.env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
        self.env.update(DATABASE_URL=database_url, API_KEYS="", PYTHONUNBUFFERED="1")
        self.started: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        log_path = self.tmp_path / f"serve-{len(self.started)}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [str(SERVE), "serve", "--host", "127.0.0.1", "--port", str(port)],
                env=self.env,
                cwd=self.tmp_path,  # no developer's .env is read
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started.append(proc)
        self.logs.append(log_path)
        return proc, f"http://127.0.0.1:{port}"

    def wait_healthy(self, proc: subprocess.Popen[bytes], url: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"serve exited with {proc.returncode} during start-up:\n{self.output(proc)}"
                )
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    return
            assert time.monotonic() < deadline, f"serve did not start:\n{self.output(proc)}"
            time.sleep(0.05)

    def output(self, proc: subprocess.Popen[bytes]) -> str:
        return self.logs[self.started.index(proc)].read_text(errors="replace")

    def close(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        for proc in self.started:  # pytest shows it only for a failed test
            print(f"---- serve pid {proc.pid} (exit {proc.returncode}) ----\n{self.output(proc)}")


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    running = Processes(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'db' / 'x.db'}")
    try:
        yield running
    finally:
        running.close()


@pytest.mark.slow
def test_a_second_serve_on_one_sqlite_file_refuses_and_a_killed_one_restarts_at_once(
    processes: Processes, tmp_path: Path
) -> None:
    first, first_url = processes.start()
    processes.wait_healthy(first, first_url)

    # Another spelling of the same file (through a symlink) meets the same lock.
    (tmp_path / "link").symlink_to(tmp_path / "db", target_is_directory=True)
    env = {**processes.env, "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'link' / 'x.db'}"}
    began = time.monotonic()
    second = subprocess.run(
        [str(SERVE), "serve", "--host", "127.0.0.1", "--port", str(free_port())],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=REFUSAL_TIMEOUT_S,
        start_new_session=True,
    )
    assert second.returncode != 0, second.stdout + second.stderr
    assert time.monotonic() - began < REFUSAL_TIMEOUT_S
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert lines[0].startswith("agent-sessions: error:")
    assert "already in use" in lines[0]
    assert f"pid {first.pid}" in lines[0]
    assert "use Postgres" in lines[0]
    assert "migrated" not in second.stdout  # refused before touching the database
    # The first one is unaffected.
    assert httpx.get(f"{first_url}/readyz", timeout=5).status_code == 200

    # A crash leaves the lock file behind, but not the lock: a new service starts at once.
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    third, third_url = processes.start()
    processes.wait_healthy(third, third_url)
    assert "already in use" not in processes.output(third)
    assert (tmp_path / "db" / "x.db.lock").exists()
    assert (tmp_path / "db" / "x.db.lock").read_text().strip() == str(third.pid)
