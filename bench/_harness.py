"""Shared plumbing for the benchmarks that drive the real service from another process.

The benchmark script is the client process; it starts the fake Anthropic server
(bench._fake_provider) and the service (bench._service) as child processes and
talks to both over loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import asyncpg
import httpx
from httpx_sse import aconnect_sse
from sqlalchemy.engine import make_url

from app.db.engine import migrate


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def rss_kb(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pss_tree_kb(pid: int) -> int:
    """Proportional set size of `pid` and all its descendants (shared pages split fairly)."""
    total = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


async def sqlite_url() -> str:
    url = f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
    await migrate(url)
    return url


class Child:
    """A `python -m module` child whose first stdout line is `URL <url>`; stdin drives it."""

    def __init__(self, module: str, *args: str) -> None:
        self.argv = [sys.executable, "-m", module, *args]
        self.url = ""
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Self:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        line = (await asyncio.wait_for(self.proc.stdout.readline(), 60)).decode().strip()
        if not line.startswith("URL "):
            raise SystemExit(f"{self.argv[2]} did not start: {line!r}")
        self.url = line[4:]
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def command(self, line: str) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(f"{line}\n".encode())
        await self.proc.stdin.drain()
        reply: dict[str, Any] = json.loads(await self.proc.stdout.readline())
        return reply

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        if self.proc.returncode is None:
            self.proc.stdin.write(b"quit\n")
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def fake_provider(delay: float, steps: int) -> Child:
    return Child("bench._fake_provider", "--delay", str(delay), "--steps", str(steps))


def service(database_url: str, anthropic_url: str, max_active_runs: int = 16) -> Child:
    return Child(
        "bench._service",
        "--database-url",
        database_url,
        "--anthropic-url",
        anthropic_url,
        "--max-active-runs",
        str(max_active_runs),
    )


def client(url: str) -> httpx.AsyncClient:
    # An idle pooled connection is dropped after 1 s: uvicorn closes idle keep-alive
    # connections after 5 s, httpx's default expiry is also 5 s, and a request sent
    # on a connection the server is closing fails with ReadError (seen between passes).
    limits = httpx.Limits(
        max_connections=None, max_keepalive_connections=None, keepalive_expiry=1.0
    )
    return httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(300.0), limits=limits)


@dataclass
class Stream:
    """What one SSE subscriber saw: (monotonic arrival time, event) in order."""

    sid: str
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    _seen: dict[str, asyncio.Event] = field(default_factory=dict)

    def seen(self, type_: str) -> asyncio.Event:
        """Set once an event of `type_` has arrived."""
        return self._seen.setdefault(type_, asyncio.Event())

    def times_of(self, type_: str) -> list[float]:
        return [t for t, e in self.events if e["type"] == type_]


TERMINAL = frozenset({"run.completed", "run.failed", "run.cancelled"})


async def subscribe(http: httpx.AsyncClient, stream: Stream) -> Stream:
    """Follow a session's events until a terminal run event, checking seq order (exits on a
    gap or a duplicate)."""
    last = 0
    async with aconnect_sse(http, "GET", f"/v1/sessions/{stream.sid}/events") as source:
        async for sse in source.aiter_sse():
            if not sse.data:
                stream.ready.set()  # the retry: frame: connected
                continue
            event = json.loads(sse.data)
            if event["seq"] != last + 1:
                raise SystemExit(f"{stream.sid}: gap or duplicate: {last} -> {event['seq']}")
            last = event["seq"]
            stream.events.append((time.monotonic(), event))
            stream.seen(event["type"]).set()
            if event["type"] in TERMINAL:
                return stream
    raise SystemExit(f"{stream.sid}: stream ended without a terminal event")


async def create_session(
    http: httpx.AsyncClient, options: dict[str, Any], computer: str = "fake"
) -> str:
    response = await http.post(
        "/v1/sessions",
        json={
            "provider": "anthropic",
            "task": "benchmark",
            "computer": {"type": computer},
            "options": options,
        },
    )
    if response.status_code not in (200, 201, 202):
        raise SystemExit(f"session create failed: {response.status_code} {response.text}")
    sid: str = response.json()["id"]
    return sid


async def check_stored(http: httpx.AsyncClient, stream: Stream) -> None:
    """Every stored event was delivered once: the session's last_event_seq is the last seen."""
    session = (await http.get(f"/v1/sessions/{stream.sid}")).json()
    seen = stream.events[-1][1]["seq"] if stream.events else 0
    if session["last_event_seq"] != seen or seen != len(stream.events):
        raise SystemExit(
            f"LOST OR DUPLICATED: {stream.sid} stored {session['last_event_seq']}, "
            f"delivered {len(stream.events)} (last seq {seen})"
        )


@asynccontextmanager
async def scratch_database(admin_url: str) -> AsyncIterator[str]:
    """A new, migrated Postgres database next to `admin_url`'s (`bench_<hex>`), dropped
    with its connections at the end: a benchmark never touches the server's own databases."""
    url = make_url(admin_url)
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    scratch = url.set(drivername="postgresql+asyncpg", database=name)
    try:
        await migrate(scratch.render_as_string(hide_password=False))
        yield scratch.render_as_string(hide_password=False)
    finally:
        admin = await asyncpg.connect(dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
