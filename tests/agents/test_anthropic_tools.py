"""Pure tests of the Anthropic tool tables and the action translation."""

from __future__ import annotations

from typing import Any

import pytest

from app.agents.anthropic_tools import (
    TOOLSET,
    ActionInputError,
    cursor_to_model,
    split_tool_use,
    thinking_params,
    to_action,
    tool_params,
    tool_version_for_model,
)
from app.computers.base import (
    Action,
    Click,
    CursorPosition,
    Display,
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
from app.computers.scaling import ScaleMap

# The model sees 1280x800; the screen is 1920x1200: every coordinate is x1.5.
SCALE = ScaleMap(Display(1920, 1200), Display(1280, 800))


@pytest.mark.parametrize(
    ("model", "version"),
    [
        ("claude-3-5-sonnet-20241022", "computer_20241022"),
        ("claude-3-5-sonnet-latest", "computer_20241022"),
        ("claude-3-7-sonnet-20250219", "computer_20250124"),
        ("claude-sonnet-4-20250514", "computer_20250124"),
        ("claude-opus-4-0", "computer_20250124"),
        ("claude-opus-4-1-20250805", "computer_20250124"),
        ("us.anthropic.claude-opus-4-1-20250805-v1:0", "computer_20250124"),
        ("claude-sonnet-4-5", "computer_20250124"),
        ("claude-sonnet-4-5@20250929", "computer_20250124"),
        ("claude-haiku-4-5-20251001", "computer_20250124"),
        ("claude-opus-4-5-20251101", "computer_20251124"),
        ("claude-opus-4-6", "computer_20251124"),
        ("claude-sonnet-4-6", "computer_20251124"),
        ("claude-opus-4-8", "computer_20251124"),
        ("claude-opus-5", "computer_20251124"),
        ("claude-sonnet-5", "computer_20251124"),
        ("claude-fable-5-2", TOOLSET),
        ("claude-sonnet-5-5", TOOLSET),
        ("claude-haiku-5-5", TOOLSET),
        ("claude-opus-6", TOOLSET),
        ("claude-mythos-preview", TOOLSET),
        ("my-gateway-alias", TOOLSET),
    ],
)
def test_tool_version_follows_the_model(model: str, version: str) -> None:
    assert tool_version_for_model(model) == version


def test_tool_params_per_version() -> None:
    assert tool_params("computer_20250124", 1280, 800) == {
        "type": "computer_20250124",
        "name": "computer",
        "display_width_px": 1280,
        "display_height_px": 800,
    }
    assert tool_params("computer_20251124", 1024, 768)["enable_zoom"] is True
    assert tool_params(TOOLSET, 1280, 800) == {"type": TOOLSET}
    with pytest.raises(ValueError, match="not an Anthropic"):
        tool_params("computer_use_preview", 1280, 800)


def test_thinking_params() -> None:
    assert thinking_params("claude-sonnet-4-5", None, 4096) == (None, 4096)
    assert thinking_params("claude-sonnet-4-5", 2048, 4096) == (
        {"type": "enabled", "budget_tokens": 2048},
        4096,
    )
    # The API minimum is 1024, and max_tokens must stay above the budget.
    assert thinking_params("claude-opus-4-1", 500, 1500) == (
        {"type": "enabled", "budget_tokens": 1024},
        3072,
    )
    assert thinking_params("claude-sonnet-4-6", 8000, 4096) == (
        {"type": "adaptive", "display": "summarized"},
        10048,
    )


CASES: list[tuple[str, dict[str, Any], Action]] = [
    ("left_click", {"coordinate": [100, 200]}, Click(x=150, y=300)),
    ("left_click", {}, Click()),
    (
        "left_click",
        {"coordinate": [10, 10], "text": "shift"},
        Click(x=15, y=15, modifiers=["Shift"]),
    ),
    ("left_click", {"text": "ctrl+shift"}, Click(modifiers=["Control", "Shift"])),
    ("right_click", {"coordinate": [2, 2]}, Click(x=3, y=3, button="right")),
    ("middle_click", {}, Click(button="middle")),
    ("double_click", {"coordinate": [0, 0]}, Click(x=0, y=0, count=2)),
    ("triple_click", {"coordinate": [1279, 799]}, Click(x=1919, y=1199, count=3)),
    ("mouse_move", {"coordinate": [640, 400]}, Move(x=960, y=600)),
    (
        "left_click_drag",
        {"start_coordinate": [0, 0], "coordinate": [100, 100]},
        Drag(path=[(0, 0), (150, 150)]),
    ),
    ("left_mouse_down", {}, MouseDown()),
    ("left_mouse_up", {}, MouseUp()),
    (
        "scroll",
        {"coordinate": [10, 10], "scroll_direction": "down", "scroll_amount": 3},
        Scroll(x=15, y=15, dy=3),
    ),
    ("scroll", {"scroll_direction": "up", "scroll_amount": 5}, Scroll(dy=-5)),
    ("scroll", {"scroll_direction": "left", "scroll_amount": 2}, Scroll(dx=-2)),
    (
        "scroll",
        {"scroll_direction": "right", "scroll_amount": 1, "text": "ctrl"},
        Scroll(dx=1, modifiers=["Control"]),
    ),
    ("type", {"text": "hello world"}, Type(text="hello world")),
    ("key", {"text": "ctrl+s"}, Key(keys=["Control", "s"])),
    ("key", {"text": "Return"}, Key(keys=["Enter"])),
    ("key", {"text": "Page_Down", "repeat": 3}, Key(keys=["PageDown"], repeat=3)),
    ("hold_key", {"text": "shift", "duration": 2}, HoldKey(keys=["Shift"], seconds=2)),
    ("wait", {"duration": 1.5}, Wait(seconds=1.5)),
    ("wait", {}, Wait(seconds=1)),
    ("screenshot", {}, Screenshot()),
    ("cursor_position", {}, CursorPosition()),
    ("zoom", {"region": [0, 0, 640, 400]}, Zoom(region=(0, 0, 960, 600))),
    ("zoom", {"region": [640, 400, 1280, 800]}, Zoom(region=(960, 600, 1920, 1200))),
]


@pytest.mark.parametrize(("name", "params", "expected"), CASES)
def test_to_action(name: str, params: dict[str, Any], expected: Action) -> None:
    assert to_action(name, params, SCALE) == expected


ERRORS: list[tuple[str, dict[str, Any], str]] = [
    ("left_click", {"coordinate": [1280, 10]}, "outside the 1280x800 screen"),
    ("left_click", {"coordinate": [5]}, "coordinate must be [x, y]"),
    ("mouse_move", {}, "coordinate must be [x, y]"),
    ("left_click", {"coordinate": ["a", "b"]}, "coordinate must be [x, y]"),
    ("left_click", {"text": "a"}, "not a modifier"),
    ("left_click_drag", {"coordinate": [1, 1]}, "needs start_coordinate"),
    ("scroll", {"scroll_direction": "sideways", "scroll_amount": 1}, "scroll_direction must be"),
    ("scroll", {"scroll_direction": "up", "scroll_amount": -1}, "non-negative"),
    ("key", {"text": "ctrl+bogus"}, "Unknown key name 'bogus'"),
    ("key", {"text": "ctrl+a Delete"}, "one key combination per action"),
    ("key", {"text": "a", "repeat": 1000}, "Invalid key input"),
    ("type", {}, "text must be a string"),
    ("hold_key", {"text": "shift"}, "duration must be"),
    ("zoom", {"region": [10, 10, 5, 5]}, "must satisfy 0 <= x0 < x1 <= 1280"),
    ("zoom", {"region": [0, 0]}, "region must be"),
    ("fly", {}, "Unknown computer action 'fly'"),
    ("", {}, "Missing action"),
]


@pytest.mark.parametrize(("name", "params", "message"), ERRORS)
def test_bad_input_is_an_action_input_error(
    name: str, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ActionInputError, match=message.replace("[", r"\[").replace("+", r"\+")):
        to_action(name, params, SCALE)


def test_split_tool_use_for_both_tool_flavours() -> None:
    beta = {"id": "t1", "name": "computer", "input": {"action": "key", "text": "a"}}
    ga = {"id": "t2", "name": "key", "input": {"text": "a"}, "toolset_name": "computer"}
    assert split_tool_use(beta) == ("key", {"text": "a"})
    assert split_tool_use(ga) == ("key", {"text": "a"})
    assert beta["input"] == {"action": "key", "text": "a"}  # not mutated


def test_cursor_position_is_reported_in_model_space() -> None:
    assert cursor_to_model("X=960, Y=600", SCALE) == "X=640, Y=400"
    assert cursor_to_model("no position", SCALE) == "no position"
