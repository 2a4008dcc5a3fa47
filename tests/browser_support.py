"""What every browser test needs: Debian's Chromium (or a clear verdict when it is missing),
and a local page server that records what its pages report back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import pytest

from app.settings import Settings


def require_chromium() -> str:
    """Chromium's path; a missing browser fails the test on CI and skips it elsewhere.

    CI must not go green by skipping the browser tests, while a developer
    without Chromium can still run the rest of the suite.
    """
    path = Settings().chromium_path
    if not path or not os.access(path, os.X_OK):
        message = (
            f"Chromium not found (CHROMIUM_PATH={path!r}): install Debian's `chromium` "
            "package or set CHROMIUM_PATH to run the browser tests"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


# ------------------------------------------------------------------ a page that reports back


class PageServer(ThreadingHTTPServer):
    """Serves fixed HTML pages by path and records what they POST to /report.

    The pages report what they receive from outside the browser, so a test reads
    what a page saw rather than trusting the service's own events.
    """

    daemon_threads = True

    def __init__(self, pages: Mapping[str, bytes]) -> None:
        super().__init__(("127.0.0.1", 0), _PageHandler)
        self.pages = dict(pages)
        self.lock = threading.Lock()
        self.received: list[dict[str, Any]] = []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def clear(self) -> None:
        with self.lock:
            self.received.clear()


class _PageHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = cast(PageServer, self.server).pages.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        if self.path != "/report":
            self.send_error(404)
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        server = cast(PageServer, self.server)
        with server.lock:
            server.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean


@contextlib.contextmanager
def serve_pages(pages: Mapping[str, bytes]) -> Iterator[PageServer]:
    """A PageServer running on its own thread for the duration of the block."""
    server = PageServer(pages)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Page:
    """A page's URL and what its server has been sent so far."""

    url: str
    server: PageServer

    def reports(self, type_: str | None = None) -> list[dict[str, Any]]:
        # Pages number their reports: concurrent fetches may reach the server out of order.
        with self.server.lock:
            got = sorted(self.server.received, key=lambda r: r["seq"])
        return [r for r in got if type_ is None or r["type"] == type_]

    async def wait_for(
        self, ready: Callable[[list[dict[str, Any]]], bool], within: float = 5.0
    ) -> list[dict[str, Any]]:
        """The reports once `ready` holds: fetches are asynchronous, so they may trail the run."""
        deadline = time.monotonic() + within
        while not ready(got := self.reports()):
            assert time.monotonic() < deadline, f"the page reported only {got}"
            await asyncio.sleep(0.02)
        return got
