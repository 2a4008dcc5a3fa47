"""BrowserComputer: a session's Playwright context, in the shared headless Chromium
(BrowserPool) or in a remote one (cdp.CdpConnection): a ContextSource gives it.

Normalized actions become Playwright mouse and keyboard calls on the active
page. The active page follows the user's attention: a tab or popup the page
opens becomes active, and closing it returns to the previous one. Every
Playwright failure surfaces as ComputerError, whose text is shown to the model.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Protocol

from playwright.async_api import BrowserContext, Frame, Page, Route, ViewportSize
from playwright.async_api import Error as PlaywrightError

from app.computers import browser_input as pw_input
from app.computers.base import (
    Action,
    ActionResult,
    Click,
    ComputerError,
    CursorPosition,
    Display,
    Drag,
    HoldKey,
    Key,
    MouseDown,
    MouseUp,
    Move,
    Scroll,
    ShotImage,
    Type,
    Wait,
    Zoom,
)
from app.computers.browser_pool import BrowserPool, playwright_message
from app.computers.browser_tab import BrowserTab
from app.computers.domains import domain_matches, host_of

__all__ = ["BrowserComputer", "BrowserPool", "ContextSource"]

# Actions that can change the page and so are followed by a settle.
_INPUT_ACTIONS = frozenset({"click", "mouse_up", "drag", "scroll", "type", "key", "hold_key"})


def is_blank(url: str) -> bool:
    """Whether a page shows nothing loaded yet (headless Chromium opens its new-tab page)."""
    return not url or url.startswith(("about:blank", "chrome://newtab", "chrome://new-tab-page"))


class ContextSource(Protocol):
    """Where a BrowserComputer's context comes from, and how it is given back."""

    async def new_context(self, display: Display) -> BrowserContext: ...

    async def release_context(self, context: BrowserContext | None) -> None: ...


class BrowserComputer:
    """A Computer backed by one BrowserContext: an isolated one of a BrowserPool's
    Chromium, or a remote browser's (CdpComputer).

    Actions are meant to run one at a time (a session's loop awaits each);
    the cursor position is tracked here because Playwright's is per page.
    """

    def __init__(
        self,
        pool: ContextSource,
        display: Display,
        *,
        start_url: str | None = None,
        blocked_domains: Sequence[str] = (),
        settle_timeout_s: float = 5.0,
        action_timeout_s: float = 30.0,
    ) -> None:
        self.display = display
        self.start_url = start_url
        self.blocked_domains = tuple(blocked_domains)
        self.settle_timeout_s = settle_timeout_s
        self.action_timeout_s = action_timeout_s
        self._source = pool  # a BrowserPool, or a remote browser's CdpConnection
        self._context: BrowserContext | None = None
        self._tabs: dict[Page, BrowserTab] = {}
        self._active: BrowserTab | None = None
        self._cursor = (0, 0)
        self._closed = False
        self._tab_crashed = False
        self._notes: list[str] = []  # what the model must be told with the next action
        self._leaving: set[asyncio.Future[None]] = set()
        self._page_opened = asyncio.Event()

    @property
    def page(self) -> Page:
        """The active page (the one screenshots show and input goes to)."""
        if self._active is None:
            raise ComputerError("The browser has no open page")
        return self._active.page

    async def start(self) -> None:
        """Open the context and a page at the display size, then load start_url if any."""
        context = await self._source.new_context(self.display)
        self._context = context
        context.set_default_timeout(self.action_timeout_s * 1000)
        context.on("page", self._on_page)
        if self.blocked_domains:
            # Only then: routing every request through Python has a cost.
            await context.route("**/*", self._stop_blocked_navigation)
        try:
            # A remote browser may show pages already: adopt them, the newest active.
            for page in context.pages:
                self._adopt(page)
            tab = self._active or self._adopt(await context.new_page())
            await self._fit(tab.page)
            # Only into a page showing nothing yet: re-attaching to a remote browser
            # (a resumed session) must not navigate away from where the session was.
            if self.start_url and is_blank(tab.page.url):
                await tab.page.goto(self.start_url, wait_until="domcontentloaded")
            tab.fresh = False
        except PlaywrightError as exc:
            await self.close()
            raise ComputerError(
                f"Could not open {self.start_url or 'a page'}: {playwright_message(exc)}"
            ) from exc

    async def _stop_blocked_navigation(self, route: Route) -> None:
        """Abort navigations to a blocked domain (the session's policy); let the rest through."""
        request = route.request
        host = host_of(request.url)
        if request.is_navigation_request() and host and domain_matches(host, self.blocked_domains):
            # A 204 answer makes the browser stay on the current page (an abort would
            # replace it with an error page).
            await route.fulfill(status=204)
        else:
            await route.continue_()

    def _on_page(self, page: Page) -> None:
        if not self._closed:
            self._adopt(page)
            self._page_opened.set()

    def _adopt(self, page: Page) -> BrowserTab:
        # Called for our own pages and for tabs/popups the page opens: the newest is active.
        tab = self._tabs.get(page)
        if tab is None and self._context is not None:
            tab = self._tabs[page] = BrowserTab(page, self._context)
            page.on("close", self._forget)
            page.on("crash", self._on_crash)
            if self.blocked_domains:
                # The route guard does not see redirects: catch a page that lands on a
                # blocked host anyway, and take it back off.
                page.on("framenavigated", self._on_frame_navigated)
        assert tab is not None
        self._active = tab
        return tab

    def _on_frame_navigated(self, frame: Frame) -> None:
        host = host_of(frame.url)
        if frame.parent_frame is not None or not host:
            return
        if domain_matches(host, self.blocked_domains):
            self._notes.append(
                f"Navigation to {frame.url} was stopped: the session's policy blocks that domain."
            )
            task = asyncio.ensure_future(self._leave_blocked(frame.page))
            self._leaving.add(task)
            task.add_done_callback(self._leaving.discard)

    async def _leave_blocked(self, page: Page) -> None:
        with contextlib.suppress(PlaywrightError):
            await page.go_back(wait_until="commit")
        host = host_of(page.url)
        if host and domain_matches(host, self.blocked_domains):
            with contextlib.suppress(PlaywrightError):  # no history to go back to
                await page.goto("about:blank", wait_until="commit")

    async def _off_blocked_pages(self) -> None:
        """Before anything reads the page: finish taking it off a blocked host."""
        if self._leaving:
            await asyncio.gather(*self._leaving, return_exceptions=True)

    def _on_crash(self, page: Page) -> None:
        self._tab_crashed = True

    def _forget(self, page: Page) -> None:
        tab = self._tabs.pop(page, None)
        if tab is not None and tab is self._active:
            # Back to the most recently opened page still open, like closing a tab.
            self._active = next(reversed(self._tabs.values()), None)

    async def _active_tab(self) -> BrowserTab:
        if self._closed or self._context is None:
            raise ComputerError(
                "The browser is closed" if self._closed else "The browser is not started"
            )
        if self._active is None:
            try:
                self._adopt(await self._context.new_page())
            except PlaywrightError as exc:
                raise ComputerError(f"Could not open a page: {playwright_message(exc)}") from exc
        tab = self._active
        assert tab is not None
        try:
            # Bounded: on a crashed tab these calls never return.
            async with asyncio.timeout(self.action_timeout_s):
                await self._fit(tab.page)
                await tab.attach()
        except TimeoutError as exc:
            raise ComputerError("The page is not responding (its tab may have crashed)") from exc
        except PlaywrightError as exc:
            raise ComputerError(f"The page is not reachable: {playwright_message(exc)}") from exc
        return tab

    async def _fit(self, page: Page) -> None:
        """Give the page the display's size where its context does not (a remote one's)."""
        size = ViewportSize(width=self.display.width, height=self.display.height)
        if page.viewport_size != size:
            await page.set_viewport_size(size)

    async def current_url(self) -> str | None:
        return None if self._active is None else self._active.page.url

    async def screenshot(self) -> ShotImage:
        await self._off_blocked_pages()
        tab = await self._active_tab()
        try:
            async with asyncio.timeout(self.action_timeout_s):
                return await tab.screenshot()
        except TimeoutError as exc:
            raise ComputerError("Screenshot timed out: the page may be unresponsive") from exc
        except PlaywrightError as exc:
            raise ComputerError(f"Screenshot failed: {playwright_message(exc)}") from exc

    async def execute(self, action: Action) -> ActionResult:
        tab = await self._active_tab()
        # Waits and holds get their own duration on top; typing about 50 characters a second.
        budget = self.action_timeout_s + getattr(action, "seconds", 0.0)
        if isinstance(action, Type):
            budget += len(action.text) / 50
        try:
            async with asyncio.timeout(budget):
                self._page_opened.clear()
                tab.popup_requested.clear()
                result = await self._run(tab, action)
                if action.type in _INPUT_ACTIONS:
                    await self._settle(tab)
                await self._off_blocked_pages()
        except TimeoutError as exc:
            raise ComputerError(
                f"{action.type} did not finish within {budget:g} s: the page may be unresponsive"
            ) from exc
        except PlaywrightError as exc:
            raise ComputerError(f"{action.type} failed: {playwright_message(exc)}") from exc
        # What the page did that the screenshot may not show: dialogs, downloads, choosers.
        notes = [note for t in self._tabs.values() for note in t.take_notes()]
        notes, self._notes = [*self._notes, *notes], []
        if notes:
            result = ActionResult(
                output="\n".join(filter(None, [result.output, *notes])), image=result.image
            )
        return result

    async def _settle(self, tab: BrowserTab) -> None:
        """After input: wait for a navigation or a new tab it started, never a fixed sleep."""
        await tab.settle(self.settle_timeout_s)
        if tab.popup_requested.is_set() and not self._page_opened.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._page_opened.wait(), self.settle_timeout_s)
        if self._active is not None and self._active is not tab:
            await self._active.wait_loaded(self.settle_timeout_s)

    def _point(self, x: int | None, y: int | None) -> tuple[int, int]:
        if x is None and y is None:
            return self._cursor
        if x is None or y is None:
            raise ComputerError("Give both x and y, or neither (the cursor position)")
        self.display.check_point(x, y)
        return (x, y)

    async def _run(self, tab: BrowserTab, action: Action) -> ActionResult:
        page = tab.page
        match action:
            case Click(button="back" | "forward"):
                # No page sees these buttons: the browser navigates, so do that.
                await pw_input.navigate(page, "back" if action.button == "back" else "forward")
            case Click():
                x, y = self._point(action.x, action.y)
                button = pw_input.playwright_button(action.button)
                async with pw_input.held(page, action.modifiers):
                    await page.mouse.click(x, y, button=button, click_count=action.count)
                self._cursor = (x, y)
            case MouseDown() | MouseUp():
                button = pw_input.playwright_button(action.button)
                await page.mouse.move(*self._cursor)  # the tab may have changed since the last move
                if isinstance(action, MouseDown):
                    await page.mouse.down(button=button)
                else:
                    await page.mouse.up(button=button)
            case Move():
                x, y = self._point(action.x, action.y)
                async with pw_input.held(page, action.modifiers):
                    await page.mouse.move(x, y)
                self._cursor = (x, y)
            case Drag():
                for x, y in action.path:
                    self.display.check_point(x, y)
                await pw_input.drag(page, action.path, action.modifiers)
                self._cursor = action.path[-1]
            case Scroll():
                x, y = self._point(action.x, action.y)
                await page.mouse.move(x, y)  # the wheel event lands under the pointer
                self._cursor = (x, y)
                notch = pw_input.WHEEL_NOTCH_PX
                async with pw_input.held(page, action.modifiers):
                    await page.mouse.wheel(action.dx * notch, action.dy * notch)
            case Type():
                await pw_input.type_text(page, action.text)
            case Key():
                await pw_input.press_chord(page, action.keys, action.repeat)
            case HoldKey():
                async with pw_input.held(page, action.keys):
                    await asyncio.sleep(action.seconds)
            case Wait():
                await asyncio.sleep(action.seconds)
            case Zoom():
                self.display.check_region(action.region)
                return ActionResult(image=await tab.capture_region(action.region))
            case CursorPosition():
                return ActionResult(output=f"X={self._cursor[0]}, Y={self._cursor[1]}")
            case _:
                pass  # screenshot: the loop takes its own afterwards
        return ActionResult()

    def is_alive(self) -> bool:
        context = self._context
        if self._closed or context is None:
            return False
        if self._tab_crashed:
            return False  # a crashed renderer never comes back: start a new browser
        browser = context.browser
        return browser is None or browser.is_connected()

    async def close(self) -> None:
        """Give the context back (the pool closes it with its pages, cookies and storage;
        a remote browser is only disconnected from); idempotent."""
        self._closed = True
        context, self._context = self._context, None
        self._tabs.clear()
        self._active = None
        # Even with no context (a start cancelled before it had one): a remote source
        # may hold a connection to drop.
        await self._source.release_context(context)
