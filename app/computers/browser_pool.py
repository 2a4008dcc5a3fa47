"""BrowserPool: the one Chromium process a service shares between its sessions.

Chromium is started on first use (a service that only runs fake or remote
computers never pays for it) and restarted on the next request if it died.
Each session gets its own BrowserContext, which isolates cookies, storage and
cache as a separate profile would, at a fraction of a process's cost.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

from playwright.async_api import Browser, BrowserContext, Playwright, async_playwright
from playwright.async_api import Error as PlaywrightError

from app.computers.base import ComputerError, Display
from app.settings import Settings

# Playwright's own browser download does not work here: Debian's Chromium is
# launched by path. No sandbox (containers lack the namespaces it needs), no
# GPU, and nothing that phones home or updates itself in the background.
# Smooth scrolling off so a wheel event has scrolled by the time we screenshot.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-smooth-scrolling",
    # Otherwise crashpad handlers outlive the browser, re-parented to PID 1.
    "--disable-crash-reporter",
)
LAUNCH_TIMEOUT_MS = 30_000


def playwright_message(exc: BaseException) -> str:
    """The first line of a Playwright error: the rest is a call log meant for debugging."""
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return text.strip().splitlines()[0]


class BrowserPool:
    """Owns the Playwright driver and one Chromium; hands out isolated contexts."""

    def __init__(
        self,
        chromium_path: str | None,
        *,
        headless: bool = True,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.chromium_path = chromium_path
        self.headless = headless
        self.args = (*CHROMIUM_ARGS, *extra_args)
        self._lock = asyncio.Lock()
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> BrowserPool:
        return cls(settings.chromium_path, headless=settings.browser_headless)

    @property
    def contexts(self) -> list[BrowserContext]:
        """The contexts currently open (one per live BrowserComputer)."""
        if self._browser is None or not self._browser.is_connected():
            return []
        return list(self._browser.contexts)

    async def browser(self) -> Browser:
        """The shared Chromium, launched on first call or relaunched if it has died."""
        async with self._lock:
            if self._closed:
                raise ComputerError("The browser pool is shut down")
            if self._browser is not None and self._browser.is_connected():
                return self._browser
            path = self.chromium_path
            if not path or not os.access(path, os.X_OK):
                raise ComputerError(
                    f"Chromium not found (CHROMIUM_PATH={path!r}); install it or set CHROMIUM_PATH"
                )
            try:
                if self._playwright is None:
                    self._playwright = await async_playwright().start()
                self._browser = await self._playwright.chromium.launch(
                    executable_path=path,
                    args=list(self.args),
                    headless=self.headless,
                    timeout=LAUNCH_TIMEOUT_MS,
                )
            except PlaywrightError as exc:
                raise ComputerError(
                    f"Could not launch Chromium at {path}: {playwright_message(exc)}"
                ) from exc
            return self._browser

    async def new_context(self, display: Display) -> BrowserContext:
        """A fresh, isolated context whose viewport is the display."""
        browser = await self.browser()
        try:
            return await browser.new_context(
                viewport={"width": display.width, "height": display.height},
                screen={"width": display.width, "height": display.height},
                device_scale_factor=1,
            )
        except PlaywrightError as exc:
            raise ComputerError(
                f"Could not open a browser context: {playwright_message(exc)}"
            ) from exc

    async def close(self) -> None:
        """Close Chromium (and with it every context) and stop the Playwright driver."""
        async with self._lock:
            self._closed = True
            browser, self._browser = self._browser, None
            playwright, self._playwright = self._playwright, None
            if browser is not None:
                try:
                    await browser.close()
                except PlaywrightError:
                    pass  # already gone: nothing left to release
            if playwright is not None:
                await playwright.stop()
