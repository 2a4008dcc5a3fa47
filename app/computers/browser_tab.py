"""BrowserTab: one page of a BrowserComputer, with what the computer must know about it.

It tracks whether the main frame is between the start of a navigation and
its DOMContentLoaded (so an action that triggers a navigation can wait for the
next page instead of sleeping a fixed time), answers JavaScript dialogs (which
would otherwise block the page), refuses downloads and file choosers (the agent
has no files to give and must not leave any behind), tells the model about all
three, and captures screenshots through the faster of the two available paths.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib

from playwright.async_api import BrowserContext, CDPSession, Dialog, Download, Page, Request
from playwright.async_api import Error as PlaywrightError

from app.computers.base import ShotImage
from app.computers.scaling import png_size

# Resolves after the next frame (rAF) or 100 ms, whichever is first: rAF never
# fires in a background tab, and the round trip alone lets a click's navigation start.
NEXT_FRAME_JS = "() => new Promise(r => { requestAnimationFrame(() => r()); setTimeout(r, 100); })"


class BrowserTab:
    """A page plus its navigation state, pending notes for the model and CDP session."""

    def __init__(self, page: Page, context: BrowserContext) -> None:
        self.page = page
        self._context = context
        # A page we have not waited on yet: its first load is awaited once, by the next settle.
        self.fresh = True
        self.loaded = asyncio.Event()
        self.loaded.set()
        self.notes: list[str] = []  # sentences for the model about what the page did
        # Set by CDP's Page.windowOpen, which arrives before the input that caused it
        # returns; Playwright's own "page" event for the new tab can come ~100 ms later.
        self.popup_requested = asyncio.Event()
        self._cdp: CDPSession | None = None
        page.on("request", self._on_request)
        page.on("requestfailed", self._on_request_done)
        page.on("download", self._on_download)
        page.on("domcontentloaded", lambda _page: self.loaded.set())
        page.on("dialog", self._on_dialog)

    async def attach(self) -> None:
        """Open this tab's CDP session (screenshots, popup and file chooser notices) if not
        open yet."""
        if self._cdp is not None:
            return
        cdp = await self._context.new_cdp_session(self.page)
        cdp.on("Page.windowOpen", lambda _params: self.popup_requested.set())
        # Like windowOpen, this arrives before the click that opened the chooser returns
        # (Playwright's "filechooser" event can come after the action's notes are read).
        cdp.on("Page.fileChooserOpened", self._on_file_chooser)
        await cdp.send("Page.enable")
        intercept = {"enabled": True, "cancel": True}
        try:
            # Chromium cancels the chooser (the input gets its `cancel` event) and tells us.
            await cdp.send("Page.setInterceptFileChooserDialog", intercept)
        except PlaywrightError:
            # A Chromium older than `cancel` (M129): the chooser is still never shown.
            await cdp.send("Page.setInterceptFileChooserDialog", {"enabled": True})
        self._cdp = cdp

    def _is_main_navigation(self, request: Request) -> bool:
        try:
            return request.is_navigation_request() and request.frame == self.page.main_frame
        except PlaywrightError:
            return False  # a service worker's request has no frame

    def _on_request(self, request: Request) -> None:
        if self._is_main_navigation(request):
            self.loaded.clear()

    def _on_request_done(self, request: Request) -> None:
        # A failed navigation (or one turned into a download) commits no new document.
        if self._is_main_navigation(request):
            self.loaded.set()

    async def _on_dialog(self, dialog: Dialog) -> None:
        # With a listener attached Playwright no longer dismisses dialogs itself:
        # answer every one, or the page would hang. beforeunload is accepted so
        # the navigation the model asked for goes ahead.
        accept = dialog.type == "beforeunload"
        verdict = "accepted" if accept else "dismissed"
        self.notes.append(f"The page opened a {dialog.type} dialog {dialog.message!r} ({verdict}).")
        with contextlib.suppress(PlaywrightError):
            await (dialog.accept() if accept else dialog.dismiss())

    def _on_download(self, download: Download) -> None:
        # The context does not accept downloads (see BrowserPool.new_context): Chromium
        # has already cancelled it. A navigation that became a download is over.
        # An <a download> click is announced only once the server answers (nothing
        # comes before): if that is after the click's settle, the next action tells it.
        self.loaded.set()
        self.notes.append(
            f"The page started a download of {download.suggested_filename!r}; "
            "downloads are not supported and it was discarded."
        )

    def _on_file_chooser(self, _params: object) -> None:
        self.notes.append(
            "The page opened a file chooser; uploading files is not supported, so it was dismissed."
        )

    def take_notes(self) -> list[str]:
        notes, self.notes = self.notes, []
        return notes

    async def settle(self, timeout_s: float) -> None:
        """Let the page react to input; if that started a navigation, wait for the new DOM."""
        with contextlib.suppress(PlaywrightError, TimeoutError):
            await asyncio.wait_for(self.page.evaluate(NEXT_FRAME_JS), 1.0)
        await self.wait_loaded(timeout_s)

    async def wait_loaded(self, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) for a pending navigation's DOMContentLoaded; never raises."""
        if self.fresh:
            self.fresh = False
            # Playwright waits for a popup's first real navigation here, not about:blank.
            with contextlib.suppress(PlaywrightError):
                await self.page.wait_for_load_state("domcontentloaded", timeout=timeout_s * 1000)
        if not self.loaded.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.loaded.wait(), timeout_s)

    async def screenshot(self) -> ShotImage:
        """The viewport as PNG.

        CDP's Page.captureScreenshot with optimizeForSpeed: it skips the work
        page.screenshot does first (caret hiding, font and animation handling)
        and encodes faster. At 1280x800 on a text-heavy page: ~33 ms median
        against ~53 ms for page.screenshot (~50 ms for CDP without the flag),
        for a PNG about 25% larger. Falls back to page.screenshot if the CDP
        session cannot be used.
        """
        try:
            await self.attach()
            assert self._cdp is not None
            reply = await self._cdp.send(
                "Page.captureScreenshot", {"format": "png", "optimizeForSpeed": True}
            )
            data = base64.b64decode(reply["data"])
        except PlaywrightError:
            self._cdp = None
            data = await self.page.screenshot(type="png")
        width, height = png_size(data)
        return ShotImage(data, "image/png", width, height)

    async def capture_region(self, region: tuple[int, int, int, int]) -> ShotImage:
        """The region (x0, y0, x1, y1) of the viewport at its native resolution."""
        x0, y0, x1, y1 = region
        data = await self.page.screenshot(
            type="png", clip={"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0}
        )
        width, height = png_size(data)
        return ShotImage(data, "image/png", width, height)
