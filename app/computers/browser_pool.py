"""BrowserPool: the one Chromium process a service shares between its sessions.

Chromium is started on first use (a service that only runs fake or remote
computers never pays for it) and restarted on the next request if it died.
Each session gets its own BrowserContext, which isolates cookies, storage and
cache as a separate profile would, at a fraction of a process's cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import tempfile
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
CLAIM_TIMEOUT_S = 5.0


HOME_PREFIX = "agent-sessions-chromium-"


def _new_home() -> str:
    """A temporary HOME for Chromium, named after this process.

    A service killed outright (SIGKILL, the OOM killer) cannot remove its own:
    the next one removes those whose process is gone.
    """
    for stale in glob.glob(os.path.join(tempfile.gettempdir(), f"{HOME_PREFIX}*")):
        pid = os.path.basename(stale).removeprefix(HOME_PREFIX).split("-")[0]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{HOME_PREFIX}{os.getpid()}-")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's: not ours to judge
    return True


def playwright_message(exc: BaseException) -> str:
    """The first line of a Playwright error: the rest is a call log meant for debugging."""
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return text.strip().splitlines()[0]


class BrowserPool:
    """Owns the Playwright driver and one Chromium; hands out isolated contexts.

    Its driver also serves the cdp computers (see `playwright`).
    """

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
        self._home: str | None = None
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
                playwright = await self._driver()
                self._browser = await playwright.chromium.launch(
                    executable_path=path,
                    args=list(self.args),
                    headless=self.headless,
                    timeout=LAUNCH_TIMEOUT_MS,
                    env=self._environment(),
                )
            except PlaywrightError as exc:
                raise ComputerError(
                    f"Could not launch Chromium at {path}: {playwright_message(exc)}"
                ) from exc
            return self._browser

    async def playwright(self) -> Playwright:
        """The Playwright driver, without launching Chromium: cdp computers attach through it,
        so a service runs one driver whatever its computers."""
        async with self._lock:
            if self._closed:
                raise ComputerError("The browser pool is shut down")
            return await self._driver()

    async def _driver(self) -> Playwright:
        # Callers hold the lock: two first users must not start two drivers.
        if self._playwright is None:
            self._playwright = await async_playwright().start()
        return self._playwright

    def _environment(self) -> dict[str, str | float | bool]:
        """Chromium's environment, with a HOME of its own in a temporary directory.

        Its profile is already temporary (Playwright's), but Chromium also writes
        under HOME (crash-report settings, a dconf cache) whatever its flags: this
        keeps that out of the service user's home and removes it with the pool.
        """
        if self._home is None:
            self._home = _new_home()
        home = self._home
        return {
            **os.environ,
            "HOME": home,
            "XDG_CONFIG_HOME": os.path.join(home, ".config"),
            "XDG_CACHE_HOME": os.path.join(home, ".cache"),
            "XDG_DATA_HOME": os.path.join(home, ".local", "share"),
        }

    async def new_context(self, display: Display) -> BrowserContext:
        """A fresh, isolated context whose viewport is the display."""
        browser = await self.browser()
        creating = asyncio.ensure_future(
            browser.new_context(
                viewport={"width": display.width, "height": display.height},
                screen={"width": display.width, "height": display.height},
                device_scale_factor=1,
                # Chromium cancels every download, so no file is ever written; pages
                # still report them (and BrowserTab tells the model).
                accept_downloads=False,
            )
        )
        try:
            return await asyncio.shield(creating)
        except asyncio.CancelledError:
            # The driver creates the context anyway: close it before the cancel goes
            # on (so the caller's clean-up is complete), or, if that takes too long,
            # as soon as it exists. Either way nobody is left holding an open context.
            with contextlib.suppress(Exception):
                context = await asyncio.wait_for(asyncio.shield(creating), CLAIM_TIMEOUT_S)
                await context.close()
            if not creating.done():
                creating.add_done_callback(_close_unclaimed)
            raise
        except PlaywrightError as exc:
            raise ComputerError(
                f"Could not open a browser context: {playwright_message(exc)}"
            ) from exc

    async def release_context(self, context: BrowserContext | None) -> None:
        """Close a context new_context gave out, with its pages, cookies and storage."""
        if context is None:
            return
        with contextlib.suppress(PlaywrightError):
            await context.close()

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
            home, self._home = self._home, None
            if home is not None:
                await asyncio.to_thread(shutil.rmtree, home, True)


_CLOSING: set[asyncio.Task[None]] = set()


def _close_unclaimed(creating: asyncio.Future[BrowserContext]) -> None:
    if creating.cancelled() or creating.exception() is not None:
        return

    async def close() -> None:
        with contextlib.suppress(PlaywrightError):
            await creating.result().close()

    task = asyncio.ensure_future(close())
    _CLOSING.add(task)  # keep a reference until it is done
    task.add_done_callback(_CLOSING.discard)
