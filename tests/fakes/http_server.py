"""Plumbing shared by the wire-protocol fakes: uvicorn on a background thread.

A fake is a raw ASGI app (no framework: it needs exact control over when the
body is read and over client disconnects) served on 127.0.0.1 with an
ephemeral port by `BackgroundServer`, which starts in milliseconds and stops
without waiting for held-back requests: `pause` ends early when the client
goes away or the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import uvicorn

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]
PauseOutcome = Literal["elapsed", "disconnected", "stopping"]


@dataclass
class Reply:
    """An HTTP response: status, raw headers, and body chunks sent in order (SSE uses several)."""

    status: int
    headers: list[tuple[bytes, bytes]]
    chunks: list[bytes]


class BackgroundServer:
    """Serves an ASGI app from its own thread and event loop, so sync and async tests can use it
    without sharing (or blocking) their loop."""

    def __init__(self, app: App, *, name: str) -> None:
        self._app = app
        self._name = name
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stopping: asyncio.Event | None = None

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError(f"{self._name} is not started")
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> None:
        # Bind here so the port is known before the server thread runs. The explicit
        # IPPROTO_TCP matters: accepted sockets inherit the listener's proto, and asyncio only
        # turns Nagle off (TCP_NODELAY) on sockets whose proto says TCP. Without it every reply
        # (headers, then body) stalls ~40 ms on the client's delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            interface="asgi3",
            lifespan="off",
            ws="none",
            log_config=None,  # leave the test process's logging alone
            log_level="warning",
            access_log=False,
            # Held-back requests end at once on shutdown (see pause); this only bounds a stuck app.
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=asyncio.run,
            args=(self._serve(sock),),
            name=f"{self._name}-{self._port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + 5
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self._name} failed to start")
            time.sleep(0.002)

    def stop(self) -> None:
        if self._thread is None or self._server is None:
            return
        if self._loop is not None and self.stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop may already be closed
                self._loop.call_soon_threadsafe(self.stopping.set)
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._thread = None

    async def _serve(self, sock: socket.socket) -> None:
        self._loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        assert self._server is not None
        try:
            await self._server.serve(sockets=[sock])
        finally:
            sock.close()


async def read_body(receive: Receive, limit: int) -> tuple[bytes | None, bool]:
    """The whole request body, or None if the client left; and whether it exceeded `limit`.

    Past the limit it keeps draining without storing: answering before the client has sent
    everything would reach the client as a broken connection, not as the 413 it should see.
    """
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None, False
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= limit:
            parts.append(chunk)
        if not message.get("more_body", False):
            break
    too_large = size > limit
    return (b"" if too_large else b"".join(parts)), too_large


async def _until_disconnect(receive: Receive) -> None:
    # Once the body has been read, receive() only returns when the client has gone.
    while (await receive())["type"] != "http.disconnect":
        pass


async def pause(seconds: float, receive: Receive, stopping: asyncio.Event) -> PauseOutcome:
    """Sleep `seconds` unless the client disconnects or the server stops first."""
    if seconds <= 0:
        return "elapsed"
    tasks = {
        "elapsed": asyncio.ensure_future(asyncio.sleep(seconds)),
        "disconnected": asyncio.ensure_future(_until_disconnect(receive)),
        "stopping": asyncio.ensure_future(stopping.wait()),
    }
    done, pending = await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    # A disconnect or a stop that races the timer wins: nobody is left to answer.
    if tasks["disconnected"] in done:
        return "disconnected"
    return "stopping" if tasks["stopping"] in done else "elapsed"


async def send_reply(send: Send, reply: Reply) -> None:
    await send({"type": "http.response.start", "status": reply.status, "headers": reply.headers})
    chunks = reply.chunks or [b""]
    for i, chunk in enumerate(chunks):
        await send({"type": "http.response.body", "body": chunk, "more_body": i < len(chunks) - 1})
