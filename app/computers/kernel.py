"""KernelComputer: a Kernel cloud browser driven through its Computer Controls API.

One `AsyncKernel` client per service (`kernel_client`) serves every session.
start() creates a browser at the display's size (or re-attaches to an existing
one by its session id, see below), actions become Computer Controls calls
(xdotool on the browser's VM), close() deletes the browser.

Retries: the SDK retries reads and lifecycle calls (screenshots, cursor,
create, retrieve, delete), but never an input action: a click retried after a
timeout or a 5xx may already have happened once, and clicking twice is worse
than telling the model it failed.

Re-attach: `session_ref()` is the Kernel browser's session id. Built with
`session_id=...` (the factory reads `spec["kernel_session_id"]`), start()
retrieves that browser instead of creating one; if it is gone (deleted, or
ended by Kernel's inactivity timeout) a new one is created and `reattached`
stays False. detach() lets go of the browser without deleting it, so a service
that stops can leave it for the next process to re-attach.

The Computer Controls API cannot tell which page is shown: current_url() is None.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Literal

import kernel
from kernel import AsyncKernel, Omit, omit
from kernel.types.browsers.computer_capture_screenshot_params import Region

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
from app.computers.kernel_api import REQUEST_TIMEOUT_S, kernel_errors, translate, wheel_units
from app.computers.kernel_keys import chord, hold_keys
from app.computers.scaling import png_size

log = logging.getLogger(__name__)

# Kernel types like a person (word-sized bursts, ~50-120 ms a character): long
# texts need longer than one ordinary request.
TYPING_S_PER_CHAR = 0.3
# Deletes of browsers whose start was cancelled mid-create (kept referenced until done).
_DISCARDS: set[asyncio.Task[None]] = set()


def _hold(keys: list[str]) -> list[str] | Omit:
    return hold_keys(keys) if keys else omit


class KernelComputer:
    """A Computer backed by one Kernel browser session."""

    def __init__(
        self,
        client: AsyncKernel,
        display: Display,
        *,
        start_url: str | None = None,
        session_id: str | None = None,
        timeout_s: int = 3600,
    ) -> None:
        self.display = display
        self.start_url = start_url
        self.timeout_s = timeout_s
        self.reattached = False
        self._client = client
        self._input = client.with_options(max_retries=0)
        self._session_id = session_id
        self._started = False
        self._closed = False
        self._gone = False

    def session_ref(self) -> str | None:
        """The Kernel browser session id: what a later process passes back to re-attach."""
        return self._session_id

    def is_alive(self) -> bool:
        return self._started and not self._closed and not self._gone

    async def current_url(self) -> str | None:
        return None

    # ---- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        wanted = self._session_id
        if wanted is not None and await self._exists(wanted):
            self.reattached = True
        else:
            self._session_id = await self._create()
        self._started = True

    async def _exists(self, session_id: str) -> bool:
        try:
            # Also teaches the SDK the browser's direct route, as create does.
            browser = await self._client.browsers.retrieve(session_id)
        except kernel.NotFoundError:
            browser = None
        except kernel.APIError as exc:
            raise translate(
                exc, f"look up the Kernel browser {session_id}", self._client.base_url
            ) from exc
        if browser is None or browser.deleted_at is not None:
            log.warning("Kernel browser %s is gone; creating a new one", session_id)
            return False
        return True

    async def _create(self) -> str:
        creating = asyncio.ensure_future(
            # No SDK retry: a create that timed out here may have succeeded at Kernel,
            # and a retry would leave that first browser running unowned.
            self._client.with_options(max_retries=0).browsers.create(
                headless=True,
                viewport={"width": self.display.width, "height": self.display.height},
                timeout_seconds=self.timeout_s,
                start_url=self.start_url or omit,
            )
        )
        try:
            with kernel_errors("create a browser", self._client.base_url):
                browser = await asyncio.shield(creating)
        except asyncio.CancelledError:
            # Kernel may finish creating it anyway: delete it once its id is known.
            task = asyncio.ensure_future(self._discard(creating))
            _DISCARDS.add(task)
            task.add_done_callback(_DISCARDS.discard)
            raise
        return browser.session_id

    async def _discard(self, creating: asyncio.Future[Any]) -> None:
        with contextlib.suppress(Exception):
            browser = await creating
            await self._client.browsers.delete_by_id(browser.session_id)

    async def close(self) -> None:
        """Delete the browser (already gone is fine)."""
        if self._closed:
            return
        self._closed = True
        if self._session_id is None or self._gone or not self._started:
            # Never started: the id (if any) is one we were asked to re-attach to and
            # have not confirmed — a failed or cancelled look-up must not delete a
            # live browser. A cancelled create cleans up after itself (_discard).
            return
        try:
            await self._client.browsers.delete_by_id(self._session_id)
        except kernel.NotFoundError:
            pass
        except kernel.APIError as exc:
            what = f"delete the Kernel browser {self._session_id}"
            raise translate(exc, what, self._client.base_url) from exc

    def detach(self) -> None:
        """Stop using the browser but leave it running, for a later re-attach."""
        self._closed = True

    # ---- actions -----------------------------------------------------------------

    async def screenshot(self) -> ShotImage:
        return await self._capture("take a screenshot", omit)

    async def execute(self, action: Action) -> ActionResult:
        sid = self._require()
        controls = self._input.browsers.computer
        match action:
            case Click():
                hold = _hold(action.modifiers)
                x, y = await self._point(action.x, action.y)
                with self._errors("click"):
                    await controls.click_mouse(
                        sid,
                        x=x,
                        y=y,
                        button=action.button,
                        click_type="click",
                        num_clicks=action.count,
                        hold_keys=hold,
                    )
            case MouseDown() | MouseUp():
                x, y = await self._point(None, None)
                kind: Literal["down", "up"] = "down" if isinstance(action, MouseDown) else "up"
                with self._errors(f"press the mouse button {kind}"):
                    await controls.click_mouse(sid, x=x, y=y, button=action.button, click_type=kind)
            case Move():
                hold = _hold(action.modifiers)
                self.display.check_point(action.x, action.y)
                with self._errors("move the mouse"):
                    # smooth=False: straight to the point, not along a humanlike curve.
                    await controls.move_mouse(
                        sid, x=action.x, y=action.y, smooth=False, hold_keys=hold
                    )
            case Drag():
                hold = _hold(action.modifiers)
                for x, y in action.path:
                    self.display.check_point(x, y)
                with self._errors("drag"):
                    # smooth=False: through exactly these points, in straight segments.
                    await controls.drag_mouse(
                        sid,
                        path=[[x, y] for x, y in action.path],
                        button="left",
                        smooth=False,
                        hold_keys=hold,
                    )
            case Scroll():
                hold = _hold(action.modifiers)
                dx, dy = wheel_units(action.dx), wheel_units(action.dy)
                if dx == 0 and dy == 0:
                    return ActionResult()  # Kernel refuses a scroll of nothing
                x, y = await self._point(action.x, action.y)
                with self._errors("scroll"):
                    await controls.scroll(sid, x=x, y=y, delta_x=dx, delta_y=dy, hold_keys=hold)
            case Type():
                if action.text:
                    timeout = REQUEST_TIMEOUT_S + TYPING_S_PER_CHAR * len(action.text)
                    with self._errors("type"):
                        await controls.type_text(sid, text=action.text, timeout=timeout)
            case Key():
                item = chord(action.keys)
                with self._errors("press keys"):
                    # Items are tapped one after the other: a repeat is the chord n times.
                    await controls.press_key(sid, keys=[item] * action.repeat)
            case HoldKey():
                item = chord(action.keys)
                with self._errors("hold keys"):
                    await controls.press_key(
                        sid,
                        keys=[item],
                        duration=round(action.seconds * 1000),
                        timeout=REQUEST_TIMEOUT_S + action.seconds,
                    )
            case Wait():
                await asyncio.sleep(action.seconds)
            case Zoom():
                self.display.check_region(action.region)
                x0, y0, x1, y1 = action.region
                region = Region(x=x0, y=y0, width=x1 - x0, height=y1 - y0)
                return ActionResult(image=await self._capture("zoom", region))
            case CursorPosition():
                x, y = await self._cursor()
                return ActionResult(output=f"X={x}, Y={y}")
            case _:
                pass  # screenshot: the loop takes its own after every action
        return ActionResult()

    # ---- helpers -------------------------------------------------------------------

    def _require(self) -> str:
        if self._closed:
            raise ComputerError("The computer is closed")
        if self._gone:
            raise ComputerError(self._gone_message())
        if not self._started or self._session_id is None:
            raise ComputerError("The computer is not started")
        return self._session_id

    async def _point(self, x: int | None, y: int | None) -> tuple[int, int]:
        """(x, y), a missing coordinate taken from the cursor, checked against the screen."""
        if x is None or y is None:
            cx, cy = await self._cursor()
            x, y = (cx if x is None else x), (cy if y is None else y)
        self.display.check_point(x, y)
        return x, y

    async def _cursor(self) -> tuple[int, int]:
        sid = self._require()
        with self._errors("read the cursor position"):
            position = await self._client.browsers.computer.get_mouse_position(sid)
        return position.x, position.y

    async def _capture(self, what: str, region: Region | Omit) -> ShotImage:
        sid = self._require()
        with self._errors(what):
            response = await self._client.browsers.computer.capture_screenshot(sid, region=region)
            data = await response.read()
        try:
            width, height = png_size(data)
        except ValueError:
            raise ComputerError(f"Kernel did not return a PNG image to {what}") from None
        return ShotImage(data, "image/png", width, height)

    def _gone_message(self) -> str:
        return (
            f"The Kernel browser {self._session_id} no longer exists (deleted, or ended "
            f"after {self.timeout_s} s without activity)"
        )

    def _errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        """Failures -> ComputerError; a 404 means the browser is gone (is_alive turns False)."""

        def gone() -> ComputerError:
            self._gone = True
            return ComputerError(self._gone_message())

        return kernel_errors(what, self._client.base_url, gone)
