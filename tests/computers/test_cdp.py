"""CdpComputer against a real Chromium started with a remote debugging port.

The remote browser stands in for a provider's: the computer attaches by its
http:// endpoint or its ws:// URL, acts on the probe page (checked by the DOM
events it produces), and on close leaves the browser and its page as they were.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from playwright.async_api import Browser

from app.computers import cdp
from app.computers.base import Click, ComputerError, Display, Key, Scroll, Type, Wait
from app.computers.browser import BrowserPool
from app.computers.cdp import CdpComputer
from tests.remote_chromium import RemoteChromium, remote_chromium

pytestmark = pytest.mark.browser

# Not the remote window's own size (headless: 780x437), so the override is visible.
DISPLAY = Display(1024, 640)
FIELD = (100, 35)  # inside #field (left 20, top 20, 300x30)
NEW_TAB_LINK = (30, 178)  # on #newtab's text (left 20, top 170)


@pytest.fixture(scope="module")
def remote(chromium_path: str) -> Iterator[RemoteChromium]:
    with remote_chromium(chromium_path) as chromium:
        yield chromium


@pytest.fixture
def fresh(remote: RemoteChromium) -> RemoteChromium:
    remote.reset()
    return remote


@asynccontextmanager
async def attached(pool: BrowserPool, url: str, **kwargs: Any) -> AsyncIterator[CdpComputer]:
    computer = CdpComputer(pool, url, DISPLAY, **kwargs)
    await computer.start()
    try:
        yield computer
    finally:
        await computer.close()


async def drain(computer: CdpComputer, *types: str) -> list[dict[str, Any]]:
    """The probe's events since the last drain (of the given types)."""
    got: list[dict[str, Any]] = await computer.page.evaluate("window.__events.splice(0)")
    return [e for e in got if not types or e["type"] in types]


async def screen_of(computer: CdpComputer) -> tuple[int, int]:
    shot = await computer.screenshot()
    size = await computer.page.evaluate("[innerWidth, innerHeight]")
    assert (shot.width, shot.height) == tuple(size)
    return (shot.width, shot.height)


@pytest.mark.parametrize("form", ["http", "ws"])
async def test_attached_actions_land_exactly(
    fresh: RemoteChromium, browser_pool: BrowserPool, probe_server: str, form: str
) -> None:
    probe = f"{probe_server}/probe.html"
    url = fresh.http_url if form == "http" else fresh.ws_url
    async with attached(browser_pool, url, start_url=probe) as computer:
        assert await computer.current_url() == probe
        assert [page["url"] for page in fresh.pages()] == [probe]  # the blank tab, no new one
        assert await screen_of(computer) == (DISPLAY.width, DISPLAY.height)
        await drain(computer)

        await computer.execute(Click(x=913, y=437))
        got = await drain(computer, "mousedown", "mouseup", "click")
        assert [(e["type"], e["x"], e["y"], e["button"]) for e in got] == [
            (kind, 913, 437, 0) for kind in ("mousedown", "mouseup", "click")
        ]

        await computer.execute(Click(x=FIELD[0], y=FIELD[1]))
        await computer.execute(Type(text="hi cdp"))
        await computer.execute(Key(keys=["Backspace"], repeat=2))
        got = await drain(computer, "keydown")
        assert [e["key"] for e in got] == [*"hi cdp", "Backspace", "Backspace"]
        assert await computer.page.evaluate("document.getElementById('field').value") == "hi c"

        await computer.execute(Scroll(x=500, y=300, dy=2))
        (wheel,) = await drain(computer, "wheel")
        assert (wheel["x"], wheel["y"], wheel["deltaX"], wheel["deltaY"]) == (500, 300, 0, 200)
        assert await computer.page.evaluate("scrollY") == 200


async def test_close_only_disconnects_and_a_reattach_resumes(
    fresh: RemoteChromium, browser_pool: BrowserPool, probe_server: str
) -> None:
    probe = f"{probe_server}/probe.html?resume"
    async with attached(browser_pool, fresh.http_url, start_url=probe) as computer:
        await computer.execute(Click(x=FIELD[0], y=FIELD[1]))
        await computer.execute(Type(text="kept"))
    assert not computer.is_alive()
    assert fresh.running() and [page["url"] for page in fresh.pages()] == [probe]

    # A resumed session attaches again (here by the ws:// URL): its page is where it
    # was, typed text included, and start_url does not navigate away from it.
    elsewhere = f"{probe_server}/probe.html?start"
    async with attached(browser_pool, fresh.ws_url, start_url=elsewhere) as again:
        assert again.is_alive() and await again.current_url() == probe
        assert await screen_of(again) == (DISPLAY.width, DISPLAY.height)
        await again.execute(Type(text="!"))
        assert await again.page.evaluate("document.getElementById('field').value") == "kept!"
    assert fresh.running()


async def test_a_new_tab_becomes_active_at_the_display_size(
    fresh: RemoteChromium, browser_pool: BrowserPool, probe_server: str
) -> None:
    probe = f"{probe_server}/probe.html"
    async with attached(browser_pool, fresh.http_url, start_url=probe) as computer:
        await computer.execute(Click(x=NEW_TAB_LINK[0], y=NEW_TAB_LINK[1]))
        assert await computer.current_url() == f"{probe}?tab=2"
        # A tab of the remote's default context gets no viewport from Playwright: ours.
        assert await screen_of(computer) == (DISPLAY.width, DISPLAY.height)
    assert len(fresh.pages()) == 2  # the remote's tabs are left open


async def test_navigation_to_a_blocked_domain_is_stopped_in_the_remote_browser(
    fresh: RemoteChromium, browser_pool: BrowserPool, probe_server: str
) -> None:
    probe = f"{probe_server}/probe.html"
    port = probe_server.rsplit(":", 1)[1]
    async with attached(
        browser_pool, fresh.http_url, start_url=probe, blocked_domains=["localhost"]
    ) as computer:
        await computer.page.evaluate(f"location.href = 'http://localhost:{port}/probe.html'")
        await computer.execute(Wait(seconds=0.3))
        assert await computer.current_url() == probe


async def test_not_alive_once_the_remote_browser_is_gone(
    chromium_path: str, browser_pool: BrowserPool
) -> None:
    with remote_chromium(chromium_path) as own:
        async with attached(browser_pool, own.ws_url) as computer:
            assert await computer.current_url() == "about:blank"  # no start_url: as it was
            assert await screen_of(computer) == (DISPLAY.width, DISPLAY.height)
            assert computer.is_alive()
            own.kill()
            deadline = time.monotonic() + 5
            while computer.is_alive():
                assert time.monotonic() < deadline, "still alive after the browser was killed"
                await asyncio.sleep(0.02)
            with pytest.raises(ComputerError):
                await computer.execute(Click(x=10, y=10))


async def test_a_start_cancelled_while_connecting_disconnects_later(
    fresh: RemoteChromium, browser_pool: BrowserPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    disconnected: list[bool] = []
    real_disconnect = cdp._disconnect

    async def disconnect(browser: Browser) -> None:
        await real_disconnect(browser)
        disconnected.append(browser.is_connected())

    monkeypatch.setattr(cdp, "_disconnect", disconnect)
    await browser_pool.playwright()  # the driver is up: the cancel lands mid-connect
    computer = CdpComputer(browser_pool, fresh.ws_url, DISPLAY)
    starting = asyncio.create_task(computer.start())
    await asyncio.sleep(0)  # runs start() up to its first wait: the connect
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    deadline = time.monotonic() + 5
    while not disconnected:
        assert time.monotonic() < deadline, "the connection made after the cancel was kept"
        await asyncio.sleep(0.02)
    assert disconnected == [False] and not computer.is_alive()


async def test_an_unreachable_browser_fails_without_showing_secrets(
    browser_pool: BrowserPool,
) -> None:
    computer = CdpComputer(
        browser_pool, "ws://127.0.0.1:9/devtools/browser/tok-123?apiKey=sk-secret", DISPLAY
    )
    with pytest.raises(ComputerError, match="Could not attach") as caught:
        await computer.start()
    message = str(caught.value)
    assert "ws://127.0.0.1:9" in message
    assert "sk-secret" not in message and "tok-123" not in message
    assert not computer.is_alive()
    await computer.close()  # nothing to release, and no error either
