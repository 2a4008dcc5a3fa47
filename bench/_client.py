"""Client-side helpers shared by the SSE benchmarks: start a server from
`bench._servers` in a subprocess, and read SSE frames with little overhead."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx


class ServerProcess:
    """`python -m bench._servers <kind>` in a subprocess; `url` once it listens."""

    def __init__(self, kind: str, database_url: str | None = None) -> None:
        self.kind = kind
        self.database_url = database_url
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""

    async def __aenter__(self) -> ServerProcess:
        argv = [sys.executable, "-m", "bench._servers", self.kind]
        if self.database_url:
            argv += ["--database-url", self.database_url]
        self.proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        if not line.startswith(b"PORT "):
            raise SystemExit(f"{self.kind} server did not start: {line!r}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def client(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url,
        timeout=httpx.Timeout(120, connect=30),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
    )


async def sse_events(response: httpx.Response) -> AsyncIterator[dict[str, Any] | None]:
    """The JSON of each `data:` frame; None for a frame without data (retry, ping).
    Both servers use sse-starlette, whose frames end with a blank CRLF line."""
    buffer = b""
    async for chunk in response.aiter_raw():
        buffer += chunk
        frames = buffer.split(b"\r\n\r\n")
        buffer = frames.pop()
        for frame in frames:
            data = None
            for line in frame.split(b"\r\n"):
                if line.startswith(b"data:"):
                    data = json.loads(line[5:])
            yield data


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]
