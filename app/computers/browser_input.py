"""Mouse and keyboard sequences on a Playwright page, as a person would perform them.

Coordinates arrive already checked against the display; keys are normalized
names (computers/keys.py), which Playwright's keyboard accepts directly.
Whatever is pressed is released again, also when the action fails or the
task is cancelled half-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
from collections.abc import AsyncIterator, Awaitable
from typing import Literal

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page

from app.computers.base import ComputerError, MouseButton
from app.computers.keys import check_normalized_keys

WHEEL_NOTCH_PX = 100  # one wheel notch, as Chromium scrolls for a mouse wheel on Linux
RELEASE_TIMEOUT_S = 1.0  # releasing keys/buttons must not delay a cancellation
# Browser-UI shortcuts a headless page never receives: performed directly.
SHORTCUTS: dict[tuple[str, ...], Literal["back", "forward", "reload"]] = {
    ("Alt", "ArrowLeft"): "back",
    ("Alt", "ArrowRight"): "forward",
    ("Meta", "["): "back",
    ("Meta", "]"): "forward",
    ("F5",): "reload",
    ("Control", "r"): "reload",
    ("Meta", "r"): "reload",
}


async def quietly(awaitable: Awaitable[None]) -> None:
    """Best-effort cleanup: bounded and silent, so the original error (or cancellation) wins."""
    with contextlib.suppress(PlaywrightError, TimeoutError):
        await asyncio.wait_for(awaitable, RELEASE_TIMEOUT_S)


def playwright_button(button: MouseButton) -> Literal["left", "middle", "right"]:
    """The Playwright name of a button that can be pressed and released."""
    if button == "back" or button == "forward":
        raise ComputerError(f"The {button} mouse button can only be clicked")
    return button


@contextlib.asynccontextmanager
async def held(page: Page, keys: list[str]) -> AsyncIterator[None]:
    """Keys held down for the duration of the block, released in reverse order."""
    check_normalized_keys(keys)
    pressed: list[str] = []
    try:
        for key in keys:
            await page.keyboard.down(key)
            pressed.append(key)
        yield
    finally:
        for key in reversed(pressed):
            await quietly(page.keyboard.up(key))


async def navigate(page: Page, where: Literal["back", "forward", "reload"]) -> None:
    """What the browser's own back/forward/reload controls do.

    History moves wait for the commit only: a page restored from the back-forward
    cache (on in a remote browser; Playwright turns it off in the ones it launches)
    fires no load events, so waiting for one hangs until the timeout
    (microsoft/playwright-mcp#1635). The computer's settle then waits for the
    DOMContentLoaded of a page that does load.
    """
    if where == "back":
        await page.go_back(wait_until="commit")
    elif where == "forward":
        await page.go_forward(wait_until="commit")
    else:
        await page.reload(wait_until="domcontentloaded")


async def drag(page: Page, path: list[tuple[int, int]], modifiers: list[str]) -> None:
    """Press at the first point, move through the others, release at the last."""
    async with held(page, modifiers):
        await page.mouse.move(*path[0])
        await page.mouse.down()
        try:
            for (x0, y0), (x1, y1) in itertools.pairwise(path):
                # Intermediate moves: drag libraries wait for a few pixels of motion.
                steps = max(1, min(20, int(math.dist((x0, y0), (x1, y1)) // 20)))
                await page.mouse.move(x1, y1, steps=steps)
        except BaseException:
            await quietly(page.mouse.up())
            raise
        await page.mouse.up()


async def type_text(page: Page, text: str) -> None:
    """Type like a typist: every character as key events; a tab presses Tab."""
    # keyboard.type would insert "\t" as a character into the focused field.
    for index, part in enumerate(text.replace("\r\n", "\n").split("\t")):
        if index:
            await page.keyboard.press("Tab")
        if part:
            await page.keyboard.type(part)


async def press_chord(page: Page, keys: list[str], repeat: int) -> None:
    """Press the keys together `repeat` times: all down in order, then up in reverse."""
    check_normalized_keys(keys)
    shortcut = SHORTCUTS.get(tuple(keys))
    for _ in range(repeat):
        if shortcut is not None:
            await navigate(page, shortcut)
        elif len(keys) == 1 and not keys[0].isascii():
            # Not on the US layout Playwright emulates: insert it as text input.
            await page.keyboard.insert_text(keys[0])
        else:
            async with held(page, keys):
                pass
