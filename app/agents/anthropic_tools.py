"""Anthropic computer-use tool versions and the translation of their actions.

Which tool a model gets (`tool_version_for_model`), how the tool is declared
(`tool_params`), how thinking is requested (`thinking_params`), and the pure
translation of one tool_use into a normalized action (`to_action`). Beta
versions are one tool named "computer" whose `input.action` picks the action;
the GA toolset sends each action as its own tool_use named after the action.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from app.computers import base as act
from app.computers.base import Action, ComputerError, Display, ShotImage
from app.computers.keys import parse_modifiers, parse_xdotool_combo
from app.computers.scaling import ScaleMap

TOOLSET = "computer_toolset_20260801"
BETA_HEADERS = {
    "computer_20241022": "computer-use-2024-10-22",
    "computer_20250124": "computer-use-2025-01-24",
    "computer_20251124": "computer-use-2025-11-24",
}
TOOL_VERSIONS = frozenset({*BETA_HEADERS, TOOLSET})
_DATE_OR_TAG = re.compile(r"^(\d{8}|latest|v\d+(:\d+)?)$")


class ActionInputError(ValueError):
    """A tool_use input that cannot be turned into an action; the text goes to the model."""


def _model_version(model: str) -> tuple[int, int] | None:
    """(major, minor) from a Claude model id in any of its spellings: "claude-3-5-sonnet-
    20241022", "claude-sonnet-4-5", "us.anthropic.claude-opus-4-1-20250805-v1:0",
    "claude-opus-4-1@20250805". None when the id carries no version."""
    name = model.lower().split("@")[0]
    if "claude" not in name:
        return None
    parts = re.split(r"[-_.]", name[name.index("claude") + len("claude") :])
    numbers = [int(p) for p in parts if p.isdigit() and not _DATE_OR_TAG.match(p) and len(p) <= 2]
    if not numbers:
        return None
    return numbers[0], numbers[1] if len(numbers) > 1 else 0


def tool_version_for_model(model: str) -> str:
    """The computer tool a model is trained on (PROVIDERS.md table).

    Unknown or unversioned names ("claude-mythos-preview", a proxy alias) get the
    GA toolset: it is what every new model requires, and `options.tool_version`
    overrides it for an older model behind an unfamiliar name.
    """
    version = _model_version(model)
    if version is None:
        return TOOLSET
    lowered = model.lower()
    family = "opus" if "opus" in lowered else "sonnet" if "sonnet" in lowered else "other"
    if version < (3, 7):
        return "computer_20241022"
    if version < (4, 5) or (version == (4, 5) and family != "opus"):
        return "computer_20250124"  # 3.7, Sonnet/Opus 4 and 4.1, Sonnet and Haiku 4.5
    if version < (5, 0) or (version == (5, 0) and family in ("opus", "sonnet")):
        return "computer_20251124"  # Opus 4.5-4.8, Sonnet 4.6, Opus 5, Sonnet 5
    return TOOLSET  # the rest of 5.x, required from 5.5 on


def supports_adaptive_thinking(model: str) -> bool:
    """4.6 and later (and unversioned future names) take `{"type": "adaptive"}`."""
    version = _model_version(model)
    return version is None or version >= (4, 6)


def thinking_params(model: str, budget: int | None, max_tokens: int) -> tuple[Any, int]:
    """(thinking param or None, max_tokens) for a session's thinking budget.

    Models from 4.6 on get adaptive thinking with summarized display (they decide
    how much to think; `enabled` is deprecated there); older ones get `enabled` with
    the budget raised to the API's 1024 minimum. max_tokens is raised when needed so
    the budget stays below it with room left for the answer and the tool calls.
    """
    if budget is None or budget <= 0:
        return None, max_tokens
    budget = max(1024, budget)
    max_tokens = max(max_tokens, budget + 2048)
    if supports_adaptive_thinking(model):
        return {"type": "adaptive", "display": "summarized"}, max_tokens
    return {"type": "enabled", "budget_tokens": budget}, max_tokens


def tool_params(version: str, width: int, height: int) -> dict[str, Any]:
    """The tools[] entry. Beta tools advertise the (scaled) display; the GA toolset has
    no display fields (the model reads the size off the screenshots) and zoom on."""
    if version == TOOLSET:
        return {"type": TOOLSET}
    if version not in BETA_HEADERS:
        raise ValueError(f"not an Anthropic computer tool version: {version!r}")
    tool: dict[str, Any] = {
        "type": version,
        "name": "computer",
        "display_width_px": width,
        "display_height_px": height,
    }
    if version == "computer_20251124":
        tool["enable_zoom"] = True
    return tool


def split_tool_use(block: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(action name, its parameters) of a tool_use block, for either tool flavour."""
    tool_input = dict(block.get("input") or {})
    if block.get("toolset_name"):
        return str(block["name"]), tool_input
    return str(tool_input.pop("action", "")), tool_input


def _point(value: Any, scale: ScaleMap, field: str) -> tuple[int, int]:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise ActionInputError(f"{field} must be [x, y] in pixels, got {value!r}")
    x, y = round(value[0]), round(value[1])
    if not scale.model.contains(x, y):
        raise ActionInputError(
            f"{field} ({x}, {y}) is outside the {scale.model.width}x{scale.model.height} screen"
        )
    return scale.to_screen(x, y)


def _optional_point(params: Mapping[str, Any], scale: ScaleMap) -> tuple[int | None, int | None]:
    if params.get("coordinate") is None:
        return None, None
    return _point(params["coordinate"], scale, "coordinate")


def _text(params: Mapping[str, Any], field: str = "text") -> str:
    value = params.get(field)
    if not isinstance(value, str):
        raise ActionInputError(f"{field} must be a string, got {value!r}")
    return value


def _number(params: Mapping[str, Any], field: str) -> float:
    value = params.get(field)
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ActionInputError(f"{field} must be a non-negative number, got {value!r}")
    return float(value)


def _region(value: Any, scale: ScaleMap) -> tuple[int, int, int, int]:
    """A zoom region in model space -> screen pixels. Unlike a point, the far corner
    may lie on the right or bottom edge (x1 == width)."""
    if (
        not isinstance(value, list | tuple)
        or len(value) != 4
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise ActionInputError(f"region must be [x0, y0, x1, y1] in pixels, got {value!r}")
    x0, y0, x1, y1 = (round(v) for v in value)
    width, height = scale.model.width, scale.model.height
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ActionInputError(
            f"region {[x0, y0, x1, y1]} must satisfy 0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height}"
        )
    return (*scale.to_screen(x0, y0), *scale.to_screen(x1, y1))


_CLICKS: dict[str, tuple[act.MouseButton, int]] = {
    "left_click": ("left", 1),
    "right_click": ("right", 1),
    "middle_click": ("middle", 1),
    "double_click": ("left", 2),
    "triple_click": ("left", 3),
}
_SCROLL_SIGNS = {"up": (0, -1), "down": (0, 1), "left": (-1, 0), "right": (1, 0)}


def _translate(name: str, params: Mapping[str, Any], scale: ScaleMap) -> Action:
    if name in _CLICKS:
        button, count = _CLICKS[name]
        x, y = _optional_point(params, scale)
        modifiers = parse_modifiers(params.get("text"))
        return act.Click(x=x, y=y, button=button, count=count, modifiers=modifiers)
    if name == "mouse_move":
        x, y = _point(params.get("coordinate"), scale, "coordinate")
        return act.Move(x=x, y=y, modifiers=parse_modifiers(params.get("text")))
    if name == "left_click_drag":
        if params.get("start_coordinate") is None:
            raise ActionInputError("left_click_drag needs start_coordinate and coordinate")
        start = _point(params["start_coordinate"], scale, "start_coordinate")
        end = _point(params.get("coordinate"), scale, "coordinate")
        return act.Drag(path=[start, end], modifiers=parse_modifiers(params.get("text")))
    if name in ("left_mouse_down", "left_mouse_up"):
        return act.MouseDown() if name == "left_mouse_down" else act.MouseUp()
    if name == "scroll":
        direction = params.get("scroll_direction")
        if direction not in _SCROLL_SIGNS:
            raise ActionInputError(
                f"scroll_direction must be up, down, left or right, got {direction!r}"
            )
        amount = _number(params, "scroll_amount")
        sx, sy = _SCROLL_SIGNS[direction]
        x, y = _optional_point(params, scale)
        return act.Scroll(
            x=x, y=y, dx=sx * amount, dy=sy * amount, modifiers=parse_modifiers(params.get("text"))
        )
    if name == "type":
        return act.Type(text=_text(params))
    if name == "key":
        repeat = params.get("repeat")
        return act.Key(
            keys=parse_xdotool_combo(_text(params)), repeat=1 if repeat is None else repeat
        )
    if name == "hold_key":
        keys = parse_xdotool_combo(_text(params))
        return act.HoldKey(keys=keys, seconds=_number(params, "duration"))
    if name == "wait":
        return act.Wait(seconds=_number(params, "duration") if "duration" in params else 1.0)
    if name == "screenshot":
        return act.Screenshot()
    if name == "cursor_position":
        return act.CursorPosition()
    if name == "zoom":
        return act.Zoom(region=_region(params.get("region"), scale))
    raise ActionInputError(f"Unknown computer action {name!r}" if name else "Missing action")


def to_action(name: str, params: Mapping[str, Any], scale: ScaleMap) -> Action:
    """One Anthropic action (name + parameters, model coordinates) -> a normalized action
    in screen pixels. Raises ActionInputError with a message meant for the model."""
    try:
        return _translate(name, params, scale)
    except (ComputerError, ValidationError) as exc:
        # Key names and pydantic bounds (repeat <= 100, ...) surface here.
        message = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise ActionInputError(f"Invalid {name} input: {message}") from None


def zoom_size(image: ShotImage, box: Display) -> Display:
    """The size a zoom capture is shown at: scaled, keeping its aspect, to fill the
    model's image size (the toolset documents zoom as "scaled up to fill the budget")."""
    factor = min(box.width / image.width, box.height / image.height)
    return Display(max(1, round(image.width * factor)), max(1, round(image.height * factor)))


_CURSOR = re.compile(r"X\s*=\s*(-?\d+)\s*,\s*Y\s*=\s*(-?\d+)")


def cursor_to_model(output: str, scale: ScaleMap) -> str:
    """Rewrite a computer's "X=.., Y=.." (screen pixels) into the model's pixel space."""
    match = _CURSOR.search(output)
    if not match:
        return output
    x, y = scale.to_model(int(match.group(1)), int(match.group(2)))
    return f"X={x}, Y={y}"
