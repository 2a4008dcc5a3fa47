"""What the browser-client tests share: a Chromium of the test's own (Playwright driving
Debian's binary), a TCP proxy the test can cut to drop connections the way a network or
a restarted balancer does, and the service with API keys and CORS."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from playwright.async_api import Browser, BrowserContext, Page, Request, Route, async_playwright

from app.computers.browser_pool import CHROMIUM_ARGS
from tests.browser_support import require_chromium
from tests.conftest import Service

API_KEY = "key-browser-tests"
TENANT = "tenant-browser"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@contextlib.asynccontextmanager
async def launch_chromium() -> AsyncIterator[Browser]:
    """Headless Chromium for the test's own pages; closed (with Playwright's driver) on exit."""
    path = require_chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=path, headless=True, args=list(CHROMIUM_ARGS)
        )
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Offline:
    """Requests a page tried to make to anything but the allowed origin (all aborted)."""

    allowed: str
    blocked: list[str] = field(default_factory=list)

    async def route(self, route: Route, request: Request) -> None:
        if request.url.startswith(self.allowed + "/") or request.url == self.allowed:
            await route.continue_()
        else:
            self.blocked.append(request.url)
            await route.abort("internetdisconnected")


async def offline_except(context: BrowserContext, origin: str) -> Offline:
    """Block every request of `context` that does not go to `origin`."""
    offline = Offline(origin.rstrip("/"))
    await context.route("**/*", offline.route)
    return offline


def page_errors(page: Page) -> list[str]:
    """Uncaught exceptions and console errors of `page`, as they happen."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on(
        "console",
        lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None,
    )
    return errors


class TcpProxy:
    """127.0.0.1:<port> forwarded to the service; `cut()` aborts every open connection
    (both sides), so a browser sees its stream drop in the middle and the service sees
    its client go. It records what went through, to show what the browser sent
    (`Last-Event-ID`) and what it got (`204`)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.cuts = 0
        self.requests: list[bytes] = []
        self.responses: list[bytes] = []
        self._open: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        await self._server.wait_closed()

    def cut(self) -> None:
        for client, upstream in list(self._open):
            client.transport.abort()
            upstream.transport.abort()
        self._open.clear()
        self.cuts += 1

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self._open.add(pair)
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, self.requests),
                self._pipe(up_reader, writer, self.responses),
            )
        finally:
            self._open.discard(pair)

    @staticmethod
    async def _pipe(
        source: asyncio.StreamReader, sink: asyncio.StreamWriter, record: list[bytes]
    ) -> None:
        try:
            while data := await source.read(65536):
                record.append(data)
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            sink.close()  # one side ended: end the other

    def sent(self) -> bytes:
        return b"".join(self.requests)

    def received(self) -> bytes:
        return b"".join(self.responses)


async def log_of(service: Service, sid: str) -> list[dict[str, Any]]:
    """The session's log through the API key, as JSON: what a browser must have seen."""
    response = await service.client.get(
        f"/v1/sessions/{sid}/events", params={"format": "json", "limit": 1000}, headers=AUTH
    )
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def issue_token(service: Service, sid: str, scope: str) -> dict[str, Any]:
    response = await service.client.post(
        f"/v1/sessions/{sid}/tokens", json={"scope": scope}, headers=AUTH
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body
