"""CdpComputer: a browser someone else runs, attached over the Chrome DevTools Protocol.

Browserbase, Steel, Hyperbrowser and Kernel hand out such a browser as a
DevTools URL, and any Chromium started with --remote-debugging-port is one.
Everything after attaching is BrowserComputer's: only where the context comes
from and what closing it means differ (`CdpConnection`). The browser is not
ours, so closing only disconnects: its pages stay where they were, and the
next attach (a resumed session) finds them there.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from playwright.async_api import Browser, BrowserContext
from playwright.async_api import Error as PlaywrightError

from app.computers.base import ComputerError, Display
from app.computers.browser import BrowserComputer
from app.computers.browser_pool import BrowserPool, playwright_message

__all__ = ["CdpComputer", "CdpConnection", "endpoint_label"]

CONNECT_TIMEOUT_S = 30.0
_URL = re.compile(r"\b(?:wss?|https?)://[^\s'\"]+", re.IGNORECASE)


def endpoint_label(url: str) -> str:
    """scheme://host[:port] of a URL: a provider's DevTools URL often carries its API key
    or session token in the path or query, which must not reach the model or the log."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "the browser"
    return f"{parts.scheme}://{parts.hostname}{port}" if parts.hostname else "the browser"


def _redacted(text: str) -> str:
    return _URL.sub(lambda match: endpoint_label(match.group(0)), text)


class CdpConnection:
    """The ContextSource of a CdpComputer: one DevTools connection to a remote Chromium.

    Connects through the BrowserPool's Playwright driver (one driver per
    service, and no local Chromium is launched for it).
    """

    def __init__(
        self, pool: BrowserPool, cdp_url: str, *, timeout_s: float = CONNECT_TIMEOUT_S
    ) -> None:
        self.cdp_url = cdp_url
        self.timeout_s = timeout_s
        self._pool = pool
        self._browser: Browser | None = None
        self._own_context: BrowserContext | None = None

    async def new_context(self, display: Display) -> BrowserContext:
        """The remote browser's default context, or a new one if it has none."""
        playwright = await self._pool.playwright()
        connecting = asyncio.ensure_future(
            playwright.chromium.connect_over_cdp(self.cdp_url, timeout=self.timeout_s * 1000)
        )
        try:
            # Shielded: a start cancelled mid-connect must still disconnect once connected.
            browser = await asyncio.shield(connecting)
        except asyncio.CancelledError:
            connecting.add_done_callback(_disconnect_when_connected)
            raise
        except PlaywrightError as exc:
            raise ComputerError(
                f"Could not attach to the browser at {endpoint_label(self.cdp_url)}: "
                f"{_redacted(playwright_message(exc))}"
            ) from exc
        self._browser = browser
        if browser.contexts:
            # Providers configure their default context (proxy, fingerprint, the
            # live view shows its pages): use it, not a context of our own.
            return browser.contexts[0]
        try:
            self._own_context = await browser.new_context(
                viewport={"width": display.width, "height": display.height},
                screen={"width": display.width, "height": display.height},
                device_scale_factor=1,
                accept_downloads=False,  # as the pool's contexts: BrowserTab tells the model
            )
        except PlaywrightError as exc:
            await self.release_context(None)
            raise ComputerError(
                f"Could not open a browser context: {_redacted(playwright_message(exc))}"
            ) from exc
        return self._own_context

    async def release_context(self, context: BrowserContext | None) -> None:
        """Close what we opened (a context of our own) and disconnect; the browser lives on.

        For a browser attached over CDP, Playwright's Browser.close only drops the
        connection: it never sends Browser.close to the remote.
        """
        own, self._own_context = self._own_context, None
        browser, self._browser = self._browser, None
        if own is not None:
            with contextlib.suppress(PlaywrightError):
                await own.close()
        if browser is not None:
            with contextlib.suppress(PlaywrightError):
                await browser.close()


# Disconnects still running: the event loop keeps only weak references to tasks.
_disconnecting: set[asyncio.Task[None]] = set()


def _disconnect_when_connected(connecting: asyncio.Future[Browser]) -> None:
    if connecting.cancelled() or connecting.exception() is not None:
        return
    task = asyncio.ensure_future(_disconnect(connecting.result()))
    _disconnecting.add(task)
    task.add_done_callback(_disconnecting.discard)


async def _disconnect(browser: Browser) -> None:
    with contextlib.suppress(PlaywrightError):
        await browser.close()


class CdpComputer(BrowserComputer):
    """A BrowserComputer on a remote Chromium reached at `cdp_url` (http(s) DevTools
    endpoint or ws(s) browser URL).

    The remote's existing pages are adopted (the newest is active) and sized to
    the display; start_url opens only in a page that shows nothing yet, so that
    re-attaching after a restart leaves the session's page as it was.
    """

    def __init__(
        self,
        pool: BrowserPool,
        cdp_url: str,
        display: Display,
        *,
        start_url: str | None = None,
        blocked_domains: Sequence[str] = (),
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        self.connection = CdpConnection(pool, cdp_url, timeout_s=connect_timeout_s)
        super().__init__(
            self.connection, display, start_url=start_url, blocked_domains=blocked_domains
        )

    @property
    def cdp_url(self) -> str:
        return self.connection.cdp_url
