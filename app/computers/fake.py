"""FakeComputer: a deterministic, in-memory computer for tests and benchmarks.

Only built when ENABLE_FAKE_COMPUTER=true. It records every action it gets,
tracks the cursor, and draws screenshots whose colour is a function of how
many actions have run, so consecutive screenshots differ in a predictable way.
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import Iterable
from functools import lru_cache

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
    Move,
    Scroll,
    ShotImage,
    Wait,
    Zoom,
)
from app.computers.keys import check_normalized_keys

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


@lru_cache(maxsize=32)
def _png_body(width: int, height: int) -> tuple[bytes, bytes]:
    """The IHDR and IDAT+IEND chunks of a 1-bit palette image whose pixels are all index 0.

    Cached per size: only the one-colour palette changes between screenshots,
    so a screenshot costs a few CRCs whatever the display size.
    """
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 3, 0, 0, 0))
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed 1-bit pixels
    idat = _chunk(b"IDAT", zlib.compress(row * height, 9))
    return ihdr, idat + _chunk(b"IEND", b"")


def solid_png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A valid PNG of the given size filled with one colour."""
    ihdr, rest = _png_body(width, height)
    return _PNG_SIGNATURE + ihdr + _chunk(b"PLTE", bytes(rgb)) + rest


def colour_for(counter: int) -> tuple[int, int, int]:
    """The screenshot colour after `counter` actions (odd multipliers: neighbours always differ)."""
    return ((counter * 67 + 32) % 256, (counter * 131 + 96) % 256, (counter * 29 + 160) % 256)


class FakeComputer:
    """A Computer that executes nothing real but behaves consistently.

    `delay_s` is awaited before each action (so cancellation can land mid-action);
    an action whose type is in `fail_on` is recorded, then raises ComputerError.
    """

    def __init__(
        self,
        display: Display | None = None,
        *,
        start_url: str | None = None,
        delay_s: float = 0.0,
        fail_on: Iterable[str] = (),
    ) -> None:
        self.display = display or Display(1280, 800)
        self.start_url = start_url
        self.url = start_url
        self.delay_s = delay_s
        self.fail_on: set[str] = set(fail_on)
        self.actions: list[Action] = []
        self.executed = 0
        self.screenshots_taken = 0
        self.cursor = (0, 0)
        self.started = False
        self.closed = False

    async def start(self) -> None:
        self.started = True

    def is_alive(self) -> bool:
        return not self.closed

    async def close(self) -> None:
        self.closed = True

    async def current_url(self) -> str | None:
        return self.url

    async def screenshot(self) -> ShotImage:
        self._check_open()
        self.screenshots_taken += 1
        png = solid_png(self.display.width, self.display.height, colour_for(self.executed))
        return ShotImage(png, "image/png", self.display.width, self.display.height)

    async def execute(self, action: Action) -> ActionResult:
        self._check_open()
        self.actions.append(action)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if action.type in self.fail_on:
            raise ComputerError(f"Injected failure for {action.type}")
        result = await self._run(action)
        self.executed += 1
        return result

    def _check_open(self) -> None:
        if self.closed:
            raise ComputerError("The computer is closed")

    def _move_to(self, x: int | None, y: int | None) -> None:
        if x is None or y is None:
            return  # a missing coordinate means "where the cursor is"
        self.display.check_point(x, y)
        self.cursor = (x, y)

    async def _run(self, action: Action) -> ActionResult:
        match action:
            case Click() | Scroll() | Move():
                self._move_to(action.x, action.y)
            case Drag():
                for x, y in action.path:
                    self.display.check_point(x, y)
                self.cursor = action.path[-1]
            case Key():
                check_normalized_keys(action.keys)
            case HoldKey():
                check_normalized_keys(action.keys)
                await asyncio.sleep(action.seconds)
            case Wait():
                await asyncio.sleep(action.seconds)
            case Zoom():
                self.display.check_region(action.region)
                x0, y0, x1, y1 = action.region
                png = solid_png(x1 - x0, y1 - y0, colour_for(self.executed))
                return ActionResult(image=ShotImage(png, "image/png", x1 - x0, y1 - y0))
            case CursorPosition():
                return ActionResult(output=f"X={self.cursor[0]}, Y={self.cursor[1]}")
            case _:
                pass  # mouse_down/up, type and screenshot change nothing observable here
        return ActionResult()
