"""Pure parts of the OpenAI loop: tool choice, wire action translation, the conversation
helpers (branching, notes, image retention), and the provider registry."""

from __future__ import annotations

from typing import Any

import pytest

from app.agents import openai_items as items_
from app.agents.base import ProviderError
from app.agents.openai import OpenAILoop
from app.agents.openai_tools import (
    ActionInputError,
    environment_for,
    to_action,
    tool_params,
    tool_version_for_model,
)
from app.agents.providers import LoopRegistry
from app.computers.base import Click, Display, Drag, Key, Move, Screenshot, Scroll, Type, Wait
from app.computers.scaling import ScaleMap
from app.settings import Settings

HALF = ScaleMap(Display(2560, 1536), Display(1280, 768))  # model coordinates x2
SAME = ScaleMap.identity(Display(1280, 800))


@pytest.mark.parametrize(
    ("model", "tool"),
    [
        ("computer-use-preview", "computer_use_preview"),
        ("computer-use-preview-2025-03-11", "computer_use_preview"),
        ("openai/computer-use-preview", "computer_use_preview"),
        ("gpt-5.4", "computer"),
        ("gpt-5.5-mini", "computer"),
        ("my-proxy-alias", "computer"),
    ],
)
def test_tool_version_follows_the_model(model: str, tool: str) -> None:
    assert tool_version_for_model(model) == tool


def test_tool_params() -> None:
    assert tool_params("computer", Display(1280, 800), "browser") == {"type": "computer"}
    assert tool_params("computer_use_preview", Display(1228, 768), "cdp") == {
        "type": "computer_use_preview",
        "display_width": 1228,
        "display_height": 768,
        "environment": "browser",
    }
    assert environment_for("desktop") == "linux"
    with pytest.raises(ValueError):
        tool_params("computer_20250124", Display(1, 1), "browser")


@pytest.mark.parametrize(
    ("raw", "action"),
    [
        ({"type": "click", "x": 10, "y": 20, "button": "left"}, Click(x=20, y=40)),
        (
            {"type": "click", "x": 10, "y": 20, "button": "wheel", "keys": ["SHIFT", "CTRL"]},
            Click(x=20, y=40, button="middle", modifiers=["Shift", "Control"]),
        ),
        ({"type": "click", "x": 1, "y": 1, "button": "back"}, Click(x=2, y=2, button="back")),
        (
            {"type": "click", "x": 1, "y": 1, "button": "forward"},
            Click(x=2, y=2, button="forward"),
        ),
        ({"type": "double_click", "x": 5, "y": 6}, Click(x=10, y=12, count=2)),
        ({"type": "move", "x": 5, "y": 6, "keys": ["ALT"]}, Move(x=10, y=12, modifiers=["Alt"])),
        (
            {"type": "drag", "path": [{"x": 0, "y": 0}, {"x": 3, "y": 4}, {"x": 9, "y": 9}]},
            Drag(path=[(0, 0), (6, 8), (18, 18)]),
        ),
        (
            {"type": "scroll", "x": 10, "y": 10, "scroll_x": -50, "scroll_y": 75},
            Scroll(x=20, y=20, dx=-1.0, dy=1.5),
        ),
        ({"type": "keypress", "keys": ["CTRL", "SHIFT", "T"]}, Key(keys=["Control", "Shift", "T"])),
        ({"type": "keypress", "keys": ["ARROWDOWN"]}, Key(keys=["ArrowDown"])),
        ({"type": "type", "text": "Hi there"}, Type(text="Hi there")),
        ({"type": "wait"}, Wait(seconds=2.0)),
        ({"type": "screenshot"}, Screenshot()),
    ],
)
def test_actions_translate_to_screen_pixels(raw: dict[str, Any], action: Any) -> None:
    assert to_action(raw, HALF) == action


def test_scroll_keeps_fractional_notches_and_wait_is_configurable() -> None:
    scroll = to_action({"type": "scroll", "x": 0, "y": 0, "scroll_x": 0, "scroll_y": 130}, SAME)
    assert scroll == Scroll(x=0, y=0, dx=0, dy=1.3)
    assert to_action({"type": "wait"}, SAME, wait_seconds=0.25) == Wait(seconds=0.25)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"type": "click", "x": 1280, "y": 10, "button": "left"}, "outside the 1280x800"),
        ({"type": "click", "x": 1, "y": 1, "button": "middle"}, "button must be"),
        ({"type": "click", "x": 1, "y": 1, "button": "left", "keys": ["A"]}, "cannot be held"),
        ({"type": "keypress", "keys": ["NOPE"]}, "Unknown key name"),
        ({"type": "keypress", "keys": []}, "Empty key list"),
        ({"type": "drag", "path": [{"x": 1, "y": 1}]}, "at least two points"),
        ({"type": "type", "text": 5}, "text must be a string"),
        ({"type": "teleport"}, "Unknown computer action"),
        ({}, "Missing action type"),
    ],
)
def test_bad_actions_explain_themselves_to_the_model(raw: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ActionInputError) as caught:
        to_action(raw, SAME)
    assert fragment in str(caught.value)


def test_dropping_a_call_branches_from_the_response_before() -> None:
    items = [
        items_.user_message("go"),
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "computer_call", "id": "cu_1", "call_id": "c1", "action": {}},
        items_.call_output("c1", "shot_1", []),
        {"type": "reasoning", "id": "rs_2", "summary": []},
        {"type": "message", "id": "msg_2", "role": "assistant", "content": []},
        {"type": "reasoning", "id": "rs_3", "summary": []},
        {"type": "computer_call", "id": "cu_2", "call_id": "c2", "action": {}},
    ]
    marks = [{"response_id": "r1", "end": 3}, {"response_id": "r2", "end": 8}]
    assert [c["call_id"] for c in items_.unanswered_calls(items)] == ["c2"]

    kept, kept_marks = items_.drop_calls(items, marks, ["c2"])

    # The reasoning before the call goes with it; the one before the message stays.
    assert [i.get("id") for i in kept][4:] == ["rs_2", "msg_2"]
    assert kept_marks == [{"response_id": "r1", "end": 3}]
    assert items_.unanswered_calls(kept) == []
    assert len(items) == 8  # pure


def test_retention_in_a_full_resend_keeps_the_newest_screenshots() -> None:
    items = [
        items_.user_message("go", "shot_1"),
        items_.call_output("c1", "shot_2", []),
        items_.call_output("c2", "shot_3", []),
    ]
    trimmed = items_.retain_images(items, 1, "data:image/png;base64,AAAA")
    assert trimmed[0]["content"][1] == {"type": "input_text", "text": items_.IMAGE_PLACEHOLDER}
    assert trimmed[1]["output"] == {
        "type": "computer_screenshot",
        "image_url": "data:image/png;base64,AAAA",
    }
    assert items_.screenshot_ids(trimmed) == ["shot_3"]
    assert items_.screenshot_ids(items_.retain_images(items, 0, "x")) == [
        "shot_1",
        "shot_2",
        "shot_3",
    ]


def test_notes() -> None:
    raws = [{"type": "click"}, {"type": "type"}, {"type": "keypress"}]
    assert items_.failure_note(raws, 0, "boom") == (
        "Action 1 of 3 (click) failed: boom. Actions 2-3 (type, keypress) were not executed. "
        "The screenshot shows the screen after the failure."
    )
    assert items_.failure_note(raws[:1], 0, "boom.") == (
        "Your click action failed: boom. The screenshot shows the screen after the failure."
    )
    assert items_.partial_note(raws, 2, "Stopped") == (
        "Stopped. Actions 1-2 of 3 ran. Action 3 (keypress) was not executed."
    )


async def test_the_registry_builds_the_openai_loop_once_and_needs_a_key() -> None:
    registry = LoopRegistry(Settings(openai_api_key="sk-test", openai_base_url="http://x/v1"))
    assert registry.supports("openai")
    loop = registry.create("openai")
    assert isinstance(loop, OpenAILoop)
    assert loop.client.max_retries == 0 and str(loop.client.base_url) == "http://x/v1/"
    assert registry.create("openai").client is loop.client  # type: ignore[attr-defined]
    await registry.close()
    with pytest.raises(ProviderError) as missing:
        LoopRegistry(Settings(openai_api_key=None)).create("openai")
    assert missing.value.type == "configuration_error"
