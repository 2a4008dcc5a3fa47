"""KernelComputer's actions through the real `kernel` SDK against the strict FakeKernel.

Every normalized action must become exactly the expected Computer Controls
calls. The fake refuses what Kernel refuses (float wheel deltas, DOM key
names, short drag paths, points off the screen), so a wrong mapping fails
here as it would fail on Kernel. Each test runs twice: with the SDK sending
computer calls straight to the browser's VM (what Kernel's responses make it
do) and through the API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from kernel import AsyncKernel

from app.agents.anthropic_tools import to_action
from app.computers.base import (
    Action,
    Click,
    ComputerError,
    CursorPosition,
    Drag,
    HoldKey,
    Key,
    MouseDown,
    MouseUp,
    Move,
    Screenshot,
    Scroll,
    Type,
    Wait,
    Zoom,
)
from app.computers.kernel import KernelComputer
from app.computers.scaling import ScaleMap, png_size
from tests.computers.kernel_support import CURSOR, DISPLAY
from tests.fakes.kernel_server import FakeKernel


@pytest.fixture(scope="module", params=[True, False], ids=["direct-vm", "via-api"])
def kernel_server(request: pytest.FixtureRequest) -> Iterator[FakeKernel]:
    with FakeKernel(direct_vm=request.param) as fake:
        yield fake


@pytest.fixture
async def computer(client: AsyncKernel) -> AsyncIterator[KernelComputer]:
    computer = KernelComputer(client, DISPLAY, start_url="https://example.com/")
    await computer.start()
    yield computer
    await computer.close()


def anthropic(name: str, **params: Any) -> Action:
    """What the Anthropic loop makes of a tool_use (identity scaling)."""
    return to_action(name, params, ScaleMap.identity(DISPLAY))


def click(x: int, y: int, **extra: Any) -> tuple[str, dict[str, Any]]:
    body = {"x": x, "y": y, "button": "left", "click_type": "click", "num_clicks": 1}
    return ("click_mouse", body | extra)


def press(*keys: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    return ("press_key", {"keys": list(keys)} | extra)


def scroll(x: int, y: int, dx: int, dy: int, **extra: Any) -> tuple[str, dict[str, Any]]:
    return ("scroll", {"x": x, "y": y, "delta_x": dx, "delta_y": dy} | extra)


WHERE = ("get_mouse_position", None)  # a missing x/y is read from Kernel first
CX, CY = CURSOR

CASES = [
    (Click(x=100, y=200), [click(100, 200)]),
    (
        Click(x=5, y=6, button="right", count=2, modifiers=["Shift"]),
        [click(5, 6, button="right", num_clicks=2, hold_keys=["Shift"])],
    ),
    (
        anthropic("triple_click", text="ctrl+alt"),
        [WHERE, click(CX, CY, num_clicks=3, hold_keys=["Ctrl", "Alt"])],
    ),
    (Click(x=1, y=2, button="back"), [click(1, 2, button="back")]),
    (
        MouseDown(),
        [WHERE, ("click_mouse", {"x": CX, "y": CY, "button": "left", "click_type": "down"})],
    ),
    (
        MouseUp(button="middle"),
        [WHERE, ("click_mouse", {"x": CX, "y": CY, "button": "middle", "click_type": "up"})],
    ),
    (Move(x=10, y=20), [("move_mouse", {"x": 10, "y": 20, "smooth": False})]),
    (
        Move(x=10, y=20, modifiers=["Meta"]),
        [("move_mouse", {"x": 10, "y": 20, "smooth": False, "hold_keys": ["Super"]})],
    ),
    (
        Drag(path=[(1, 2), (300, 40), (50, 600)], modifiers=["Shift"]),
        [
            (
                "drag_mouse",
                {
                    "path": [[1, 2], [300, 40], [50, 600]],
                    "button": "left",
                    "smooth": False,
                    "hold_keys": ["Shift"],
                },
            )
        ],
    ),
    (
        anthropic("left_click_drag", start_coordinate=[10, 10], coordinate=[20, 30]),
        [("drag_mouse", {"path": [[10, 10], [20, 30]], "button": "left", "smooth": False})],
    ),
    (
        anthropic("scroll", coordinate=[500, 300], scroll_direction="down", scroll_amount=3),
        [scroll(500, 300, 0, 3)],
    ),
    (
        anthropic("scroll", scroll_direction="left", scroll_amount=2, text="shift"),
        [WHERE, scroll(CX, CY, -2, 0, hold_keys=["Shift"])],
    ),
    (Scroll(x=1, y=1, dy=0.4), [scroll(1, 1, 0, 1)]),  # some scrolling: at least a notch
    (Scroll(x=1, y=1, dx=-2.5, dy=1.49), [scroll(1, 1, -3, 1)]),
    (Scroll(x=1, y=1), []),  # Kernel refuses a scroll of nothing
    (Type(text="héllo\n"), [("type", {"text": "héllo\n"})]),
    (Type(text=""), []),
    (anthropic("key", text="ctrl+shift+t"), [press("Ctrl+Shift+t")]),
    (anthropic("key", text="Return", repeat=3), [press("Return", "Return", "Return")]),
    (anthropic("key", text="ctrl+minus"), [press("Ctrl+minus")]),
    (Key(keys=["Meta", "ArrowLeft"]), [press("Super+Left")]),
    (Key(keys=["Alt", "F4"]), [press("Alt+F4")]),
    (Key(keys=["PageDown"]), [press("Page_Down")]),
    (Key(keys=["Backspace"]), [press("BackSpace")]),
    (Key(keys=[" "]), [press("space")]),
    (Key(keys=["A"]), [press("A")]),
    (Key(keys=["é"]), [press("U00E9")]),
    (Key(keys=["Control", "Shift", "["]), [press("Ctrl+Shift+bracketleft")]),
    (HoldKey(keys=["Shift"], seconds=0.25), [press("Shift", duration=250)]),
    (Wait(seconds=0.01), []),
    (Screenshot(), []),  # the loop takes its own screenshot after every action
    (
        Zoom(region=(10, 20, 110, 70)),
        [("screenshot", {"region": {"x": 10, "y": 20, "width": 100, "height": 50}})],
    ),
    (CursorPosition(), [WHERE]),
]


@pytest.mark.parametrize(("action", "expected"), CASES, ids=lambda v: getattr(v, "type", ""))
async def test_each_action_makes_exactly_the_expected_calls(
    computer: KernelComputer, kernel_fake: FakeKernel, action: Action, expected: list[Any]
) -> None:
    await computer.execute(action)
    assert kernel_fake.computer_calls(computer.session_ref()) == expected


async def test_start_creates_a_headless_browser_of_the_display_size(
    computer: KernelComputer, kernel_fake: FakeKernel
) -> None:
    (create,) = kernel_fake.calls
    assert (create.method, create.path, create.op) == ("POST", "/browsers", "create")
    assert create.body == {
        "headless": True,
        "viewport": {"width": 1280, "height": 800},
        "timeout_seconds": 3600,
        "start_url": "https://example.com/",
    }
    assert computer.is_alive() and not computer.reattached
    assert computer.session_ref() == kernel_fake.browsers[0].session_id


async def test_calls_are_authenticated_as_kernel_expects(
    computer: KernelComputer, kernel_fake: FakeKernel
) -> None:
    await computer.execute(Click(x=1, y=1))
    create, action = kernel_fake.calls
    assert create.headers["authorization"] == f"Bearer {kernel_fake.api_key}"
    if kernel_fake.direct_vm:
        # Straight to the VM with the browser's jwt; the API key never leaves for the VM.
        assert action.route == "vm" and "authorization" not in action.headers
    else:
        assert (
            action.route == "api"
            and action.headers["authorization"] == create.headers["authorization"]
        )


async def test_screenshot_is_a_png_of_the_real_screen(
    computer: KernelComputer, kernel_fake: FakeKernel
) -> None:
    shot = await computer.screenshot()
    assert shot.media_type == "image/png" and (shot.width, shot.height) == (1280, 800)
    assert png_size(shot.data) == (1280, 800)
    assert kernel_fake.computer_calls() == [("screenshot", {})]
    await computer.execute(Click(x=3, y=3))
    assert (await computer.screenshot()).data != shot.data  # the screen changed


async def test_zoom_returns_the_region_at_its_own_size(computer: KernelComputer) -> None:
    result = await computer.execute(Zoom(region=(1180, 700, 1280, 800)))
    assert result.image is not None and (result.image.width, result.image.height) == (100, 100)
    assert png_size(result.image.data) == (100, 100)


async def test_cursor_position_reports_where_kernel_says(computer: KernelComputer) -> None:
    assert (await computer.execute(CursorPosition())).output == f"X={CX}, Y={CY}"
    await computer.execute(Move(x=10, y=20))
    assert (await computer.execute(CursorPosition())).output == "X=10, Y=20"
    await computer.execute(Drag(path=[(5, 5), (7, 9)]))
    assert (await computer.execute(CursorPosition())).output == "X=7, Y=9"


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (Click(x=1280, y=0), r"outside the 1280x800 screen"),
        (Move(x=0, y=800), r"outside the 1280x800 screen"),
        (Drag(path=[(1, 1), (2, 2), (1300, 2)]), r"outside"),
        (Scroll(x=-1, y=5, dy=1), r"outside"),
        (Key(keys=["Hyper"]), r"Unknown key name 'Hyper'"),
        (Key(keys=["\x01"]), r"Unknown key name"),
        (Click(x=1, y=1, modifiers=["Ctrl"]), r"Unknown key name 'Ctrl'"),
        (Zoom(region=(10, 10, 10, 20)), r"Region"),
    ],
)
async def test_bad_input_fails_before_anything_is_sent(
    computer: KernelComputer, kernel_fake: FakeKernel, action: Action, message: str
) -> None:
    with pytest.raises(ComputerError, match=message):
        await computer.execute(action)
    assert kernel_fake.computer_calls() == []
