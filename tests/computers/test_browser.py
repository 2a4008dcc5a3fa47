"""BrowserComputer against real Chromium: each action checked by the DOM events it produces."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import time
from typing import Any

import pytest
from PIL import Image

from app.computers.base import (
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
    Type,
    Wait,
    Zoom,
)
from app.computers.browser import BrowserComputer, BrowserPool
from tests.computers.conftest import DISPLAY

pytestmark = pytest.mark.browser


async def events(browser: BrowserComputer, *types: str) -> list[dict[str, Any]]:
    recorded: list[dict[str, Any]] = await browser.page.evaluate("window.__events")
    return [e for e in recorded if not types or e["type"] in types]


async def center_of(browser: BrowserComputer, element_id: str) -> tuple[int, int]:
    box = await browser.page.evaluate(
        "id => { const r = document.getElementById(id).getBoundingClientRect();"
        " return [Math.round(r.x + r.width / 2), Math.round(r.y + r.height / 2)]; }",
        element_id,
    )
    return (box[0], box[1])


@pytest.mark.parametrize("point", [(700, 400), (0, 0), (1279, 799), (913, 37)])
async def test_click_lands_exactly(browser: BrowserComputer, point: tuple[int, int]) -> None:
    await browser.execute(Click(x=point[0], y=point[1]))
    got = await events(browser, "mousedown", "mouseup", "click")
    assert [(e["type"], e["x"], e["y"], e["button"]) for e in got] == [
        (kind, *point, 0) for kind in ("mousedown", "mouseup", "click")
    ]
    result = await browser.execute(CursorPosition())
    assert result.output == f"X={point[0]}, Y={point[1]}"


async def test_double_click_and_click_at_cursor(browser: BrowserComputer) -> None:
    await browser.execute(Move(x=500, y=300))
    await browser.execute(Click(count=2))  # no x/y: where the cursor is
    clicks = await events(browser, "click", "dblclick")
    assert [(e["type"], e["detail"], e["x"], e["y"]) for e in clicks] == [
        ("click", 1, 500, 300),
        ("click", 2, 500, 300),
        ("dblclick", 2, 500, 300),
    ]


async def test_right_click(browser: BrowserComputer) -> None:
    await browser.execute(Click(x=640, y=500, button="right"))
    got = await events(browser, "mousedown", "contextmenu")
    assert [(e["type"], e["button"], e["x"], e["y"]) for e in got] == [
        ("mousedown", 2, 640, 500),
        ("contextmenu", 2, 640, 500),
    ]


async def test_shift_is_held_during_the_click_only(browser: BrowserComputer) -> None:
    await browser.execute(Click(x=700, y=450, modifiers=["Shift"]))
    await browser.execute(Click(x=710, y=450))
    clicks = await events(browser, "click")
    assert [e["shift"] for e in clicks] == [True, False]
    keys = await events(browser, "keydown", "keyup")
    assert [(e["type"], e["key"]) for e in keys] == [("keydown", "Shift"), ("keyup", "Shift")]


async def test_drag_follows_the_path(browser: BrowserComputer) -> None:
    path = [(100, 400), (300, 460), (500, 400)]
    await browser.execute(Drag(path=path))
    got = await events(browser, "mousedown", "mousemove", "mouseup")
    assert (got[0]["type"], got[0]["x"], got[0]["y"]) == ("mousedown", 100, 400)
    assert (got[-1]["type"], got[-1]["x"], got[-1]["y"]) == ("mouseup", 500, 400)
    moves = [(e["x"], e["y"]) for e in got if e["type"] == "mousemove"]
    assert (300, 460) in moves and moves[-1] == (500, 400)
    assert len(moves) > 3  # intermediate steps, not a jump
    assert all(e["buttons"] == 1 for e in got if e["type"] == "mousemove")


async def test_mouse_down_and_up_at_the_cursor(browser: BrowserComputer) -> None:
    await browser.execute(Move(x=420, y=420))
    await browser.execute(MouseDown())
    await browser.execute(MouseUp())
    got = await events(browser, "mousedown", "mouseup")
    assert [(e["type"], e["x"], e["y"]) for e in got] == [
        ("mousedown", 420, 420),
        ("mouseup", 420, 420),
    ]


async def test_scroll_notches_become_wheel_pixels(browser: BrowserComputer) -> None:
    await browser.execute(Scroll(x=640, y=400, dy=3))
    await browser.execute(Scroll(dx=2, modifiers=["Alt"]))
    wheels = await events(browser, "wheel")
    assert [(e["deltaX"], e["deltaY"], e["deltaMode"], e["x"], e["y"]) for e in wheels] == [
        (0, 300, 0, 640, 400),
        (200, 0, 0, 640, 400),
    ]
    assert [e["alt"] for e in wheels] == [False, True]
    assert await browser.page.evaluate("[window.scrollX, window.scrollY]") == [200, 300]


async def test_type_and_tab(browser: BrowserComputer) -> None:
    await browser.execute(Click(x=60, y=35))
    await browser.execute(Type(text="Hello, wörld!\tsecond"))
    values = await browser.page.evaluate(
        "[document.getElementById('field').value, document.getElementById('area').value]"
    )
    assert values == ["Hello, wörld!", "second"]


async def test_ctrl_a_is_a_chord(browser: BrowserComputer) -> None:
    await browser.execute(Click(x=60, y=35))
    await browser.execute(Type(text="abc"))
    await browser.page.evaluate("window.__events = []")
    await browser.execute(Key(keys=["Control", "a"]))
    await browser.execute(Key(keys=["Backspace"]))
    keys = await events(browser, "keydown", "keyup")
    assert [(e["type"], e["key"], e["ctrl"]) for e in keys] == [
        ("keydown", "Control", True),
        ("keydown", "a", True),
        ("keyup", "a", True),
        ("keyup", "Control", False),
        ("keydown", "Backspace", False),
        ("keyup", "Backspace", False),
    ]
    assert await browser.page.evaluate("document.getElementById('field').value") == ""


async def test_key_repeat_and_hold(browser: BrowserComputer) -> None:
    await browser.execute(Key(keys=["ArrowDown"], repeat=3))
    started = time.monotonic()
    await browser.execute(HoldKey(keys=["Shift"], seconds=0.3))
    assert time.monotonic() - started >= 0.3
    keys = await events(browser, "keydown", "keyup")
    assert [(e["type"], e["key"]) for e in keys] == [
        *[("keydown", "ArrowDown"), ("keyup", "ArrowDown")] * 3,
        ("keydown", "Shift"),
        ("keyup", "Shift"),
    ]


async def test_cancelled_hold_releases_the_key(browser: BrowserComputer) -> None:
    task = asyncio.create_task(browser.execute(HoldKey(keys=["Shift"], seconds=30)))
    await asyncio.sleep(0.3)
    task.cancel()
    started = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 1.0
    keys = await events(browser, "keydown", "keyup")
    assert [(e["type"], e["key"]) for e in keys] == [("keydown", "Shift"), ("keyup", "Shift")]


async def test_screenshot_is_a_png_at_display_size(browser: BrowserComputer) -> None:
    shot = await browser.screenshot()
    assert shot.media_type == "image/png" and shot.data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(shot.data)) as image:
        assert image.size == (DISPLAY.width, DISPLAY.height) == (shot.width, shot.height)


async def test_zoom_captures_the_region_at_native_resolution(browser: BrowserComputer) -> None:
    await browser.execute(Scroll(x=640, y=400, dy=2))  # the marker is fixed: still at (600, 20)
    result = await browser.execute(Zoom(region=(600, 20, 640, 60)))
    assert result.image is not None and (result.image.width, result.image.height) == (40, 40)
    with Image.open(io.BytesIO(result.image.data)) as image:
        assert image.convert("RGB").getcolors() == [(1600, (255, 0, 0))]


async def test_follows_new_tab_and_returns_when_it_closes(browser: BrowserComputer) -> None:
    first = browser.page
    x, y = await center_of(browser, "newtab")
    await browser.execute(Click(x=x, y=y))
    assert (await browser.current_url() or "").endswith("/probe.html?tab=2")
    assert browser.page is not first
    assert await browser.page.evaluate("document.readyState") != "loading"
    await browser.page.close()
    assert browser.page is first


async def test_waits_for_the_navigation_a_click_starts(
    browser: BrowserComputer, probe_server: str
) -> None:
    x, y = await center_of(browser, "nav")
    started = time.monotonic()
    await browser.execute(Click(x=x, y=y))
    assert time.monotonic() - started >= 0.4  # the server delays the page 400 ms
    assert await browser.current_url() == f"{probe_server}/slow.html?ms=400"
    assert await browser.page.evaluate("document.readyState") != "loading"
    await browser.execute(Key(keys=["Alt", "ArrowLeft"]))  # browser "back"
    assert await browser.current_url() == f"{probe_server}/probe.html"


async def test_dialogs_are_dismissed_and_reported(browser: BrowserComputer) -> None:
    x, y = await center_of(browser, "confirm")
    result = await browser.execute(Click(x=x, y=y))
    assert result.output is not None and "confirm dialog 'Really?'" in result.output
    assert await browser.page.evaluate("window.__confirmed") is False


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (Click(x=1280, y=10), "outside the 1280x800 screen"),
        (Key(keys=["Ctrl", "c"]), "Unknown key name 'Ctrl'"),
        (MouseDown(button="back"), "can only be clicked"),
        (Zoom(region=(10, 10, 5, 20)), "Region"),
    ],
)
async def test_bad_actions_raise_computer_error(
    browser: BrowserComputer, action: Any, message: str
) -> None:
    with pytest.raises(ComputerError, match=message):
        await browser.execute(action)


async def test_close_releases_the_context(browser_pool: BrowserPool, probe_server: str) -> None:
    before = len(browser_pool.contexts)
    computer = BrowserComputer(
        browser_pool, Display(800, 600), start_url=f"{probe_server}/probe.html"
    )
    await computer.start()
    assert len(browser_pool.contexts) == before + 1
    assert (await computer.screenshot()).width == 800
    await computer.close()
    assert len(browser_pool.contexts) == before
    with pytest.raises(ComputerError, match="closed"):
        await computer.execute(CursorPosition())
    await computer.close()  # idempotent


async def test_unreachable_start_url_fails_cleanly(browser_pool: BrowserPool) -> None:
    before = len(browser_pool.contexts)
    computer = BrowserComputer(browser_pool, DISPLAY, start_url="http://127.0.0.1:9/")
    with pytest.raises(ComputerError, match=re.escape("Could not open http://127.0.0.1:9/")):
        await computer.start()
    assert len(browser_pool.contexts) == before


async def test_navigation_to_a_blocked_domain_is_stopped(
    browser_pool: BrowserPool, probe_server: str
) -> None:
    port = probe_server.rsplit(":", 1)[1]
    computer = BrowserComputer(
        browser_pool, DISPLAY, start_url=f"{probe_server}/probe.html", blocked_domains=["localhost"]
    )
    await computer.start()
    try:
        # A link to the same (allowed) host still works.
        x, y = await center_of(computer, "nav")
        await computer.execute(Click(x=x, y=y))
        assert await computer.current_url() == f"{probe_server}/slow.html?ms=400"
        # The page sends itself to a blocked host (and a subdomain of it): both stopped.
        for target in (
            f"http://localhost:{port}/probe.html",
            f"http://a.localhost:{port}/probe.html",
        ):
            await computer.page.evaluate(f"location.href = {target!r}")
            await computer.execute(Wait(seconds=0.3))
            assert await computer.current_url() == f"{probe_server}/slow.html?ms=400"
    finally:
        await computer.close()


async def test_a_crashed_tab_is_reported_not_hung(
    browser_pool: BrowserPool, probe_server: str
) -> None:
    computer = BrowserComputer(
        browser_pool, DISPLAY, start_url=f"{probe_server}/probe.html", action_timeout_s=2.0
    )
    await computer.start()
    try:
        assert computer.is_alive()
        with contextlib.suppress(Exception):
            await computer.page.goto("chrome://crash", timeout=2000)
        for _ in range(100):  # the crash event arrives shortly after
            if not computer.is_alive():
                break
            await asyncio.sleep(0.05)
        # Dead as far as the session is concerned: its computer is re-created.
        assert not computer.is_alive()
        started = time.monotonic()
        with pytest.raises(ComputerError):
            await computer.execute(Click(x=10, y=10))
        assert time.monotonic() - started < 10  # bounded, not hung
    finally:
        await computer.close()


async def test_a_redirect_to_a_blocked_domain_is_taken_back(
    browser_pool: BrowserPool, probe_server: str
) -> None:
    port = probe_server.rsplit(":", 1)[1]
    computer = BrowserComputer(
        browser_pool, DISPLAY, start_url=f"{probe_server}/probe.html", blocked_domains=["localhost"]
    )
    await computer.start()
    try:
        # An allowed URL that redirects to a blocked host (the route guard sees only
        # the first hop of a redirect chain).
        target = f"{probe_server}/redirect?to=http://localhost:{port}/probe.html"
        await computer.page.evaluate(f"location.href = {target!r}")
        result = await computer.execute(Wait(seconds=0.5))
        assert "blocks that domain" in (result.output or "")
        url = await computer.current_url() or ""
        assert "localhost" not in url
        assert url in (f"{probe_server}/probe.html", "about:blank")
        shot = await computer.screenshot()
        assert shot.width == DISPLAY.width
    finally:
        await computer.close()
