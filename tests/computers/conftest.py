"""Fixtures for the computer tests: a local probe site, one shared Chromium, a context per test."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from kernel import AsyncKernel

from app.computers.base import Display
from app.computers.browser import BrowserComputer, BrowserPool
from tests.browser_support import require_chromium
from tests.computers.kernel_support import client_for
from tests.fakes.kernel_server import FakeKernel

PROBE_HTML = (Path(__file__).parent / "probe.html").read_bytes()
DISPLAY = Display(1280, 800)


class _ProbeHandler(BaseHTTPRequestHandler):
    """Serves the probe page at /probe.html and, after ?ms= of delay, at /slow.html;
    /redirect?to=<url> answers a 302 there."""

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/redirect":
            # /redirect?to=<url>: a 302, as a site redirecting elsewhere would answer.
            self.send_response(302)
            self.send_header("Location", parse_qs(url.query)["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if url.path not in ("/probe.html", "/slow.html"):
            self.send_error(404)
            return
        if url.path == "/slow.html":
            time.sleep(int(parse_qs(url.query).get("ms", ["0"])[0]) / 1000)
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PROBE_HTML)))
        self.end_headers()
        self.wfile.write(PROBE_HTML)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean


@pytest.fixture(scope="session")
def probe_server() -> Iterator[str]:
    """Base URL of a local HTTP server on 127.0.0.1 serving the probe page."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ProbeHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Chromium's path (fails on CI, skips elsewhere when it is missing)."""
    return require_chromium()


@pytest.fixture(scope="session")
async def browser_pool(chromium_path: str) -> AsyncIterator[BrowserPool]:
    """One Chromium process for the whole test session."""
    pool = BrowserPool(chromium_path)
    yield pool
    await pool.close()


@pytest.fixture
async def browser(browser_pool: BrowserPool, probe_server: str) -> AsyncIterator[BrowserComputer]:
    """A fresh context per test, started on the probe page."""
    computer = BrowserComputer(browser_pool, DISPLAY, start_url=f"{probe_server}/probe.html")
    await computer.start()
    yield computer
    await computer.close()


@pytest.fixture
async def client(kernel_fake: FakeKernel) -> AsyncIterator[AsyncKernel]:
    """A kernel SDK client pointed at kernel_fake (the Kernel computer tests)."""
    client = client_for(kernel_fake)
    yield client
    await client.close()
