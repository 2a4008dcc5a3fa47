"""OpenAI computer-use tools and the translation of their actions.

Which tool a model gets (`tool_version_for_model`), how it is declared
(`tool_params`), how reasoning summaries are asked for (`reasoning_params`),
and the pure translation of one wire action into a normalized action
(`to_action`). The preview tool sends one `action` per computer_call; the GA
`computer` tool sends a batch in `actions`; the action shapes are the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from app.computers import base as act
from app.computers.base import Action, ComputerError, Display
from app.computers.keys import MODIFIER_KEYS, parse_openai_keys
from app.computers.scaling import ScaleMap

PREVIEW = "computer_use_preview"
GA = "computer"
TOOL_VERSIONS = frozenset({PREVIEW, GA})
# Every computer the service drives today is a Chromium page or window; "linux" is
# the environment of anything else (a desktop backend).
BROWSER_COMPUTERS = frozenset({"browser", "cdp", "kernel", "fake"})
# The wire `wait` has no duration. OpenAI's computer-use guide sleeps 2 s for it.
DEFAULT_WAIT_SECONDS = 2.0
# The SDK gives scroll_x/scroll_y no unit: they are pixels, about 100 per wheel notch.
PIXELS_PER_NOTCH = 100.0

_BUTTONS: dict[str, act.MouseButton] = {
    "left": "left",
    "right": "right",
    "wheel": "middle",
    "back": "back",
    "forward": "forward",
}


class ActionInputError(ValueError):
    """A wire action that cannot be turned into a normalized one; the text goes to the model."""


def tool_version_for_model(model: str) -> str:
    """The computer tool a model is trained on (PROVIDERS.md table).

    `computer-use-preview` (and its dated snapshots, also behind a "vendor/" proxy
    prefix) gets the preview tool; every other name gets the GA `computer` tool,
    which gpt-5.4 and later require and which any new model will use.
    `options.tool_version` overrides this for a preview model behind an alias.
    """
    name = model.lower().rsplit("/", 1)[-1]
    return PREVIEW if name.startswith("computer-use-preview") else GA


def environment_for(computer_type: str) -> str:
    return "browser" if computer_type in BROWSER_COMPUTERS else "linux"


def tool_params(version: str, size: Display, computer_type: str) -> dict[str, Any]:
    """The tools[] entry. The preview tool advertises the (scaled) display; the GA tool
    is its type alone (the model reads the size off the screenshots)."""
    if version == GA:
        return {"type": GA}
    if version != PREVIEW:
        raise ValueError(f"not an OpenAI computer tool: {version!r}")
    return {
        "type": PREVIEW,
        "display_width": size.width,
        "display_height": size.height,
        "environment": environment_for(computer_type),
    }


def reasoning_params(version: str) -> dict[str, str]:
    """Ask for reasoning summaries (they become assistant.thinking). `concise` is the one
    summary setting computer-use-preview documents; GA models take `auto`."""
    return {"summary": "concise" if version == PREVIEW else "auto"}


def image_detail(version: str) -> str:
    """The `detail` of an input_image. Screenshots are already scaled to what the tool's
    model sees (computers/scaling.py): "high" for preview, "original" for GA."""
    return "high" if version == PREVIEW else "original"


def call_actions(call: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The wire actions of a computer_call, in order (a preview call has exactly one)."""
    if call.get("actions") is not None:
        return [dict(a) for a in call["actions"]]
    return [dict(call.get("action") or {})]


def tool_of(call: Mapping[str, Any]) -> str:
    """Which tool issued a computer_call: GA calls carry `actions`, preview ones `action`."""
    return GA if call.get("actions") is not None else PREVIEW


def _number(value: Any, field: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ActionInputError(f"{field} must be a number, got {value!r}")
    return float(value)


def _point(raw: Mapping[str, Any], scale: ScaleMap, where: str = "") -> tuple[int, int]:
    x = round(_number(raw.get("x"), f"{where}x"))
    y = round(_number(raw.get("y"), f"{where}y"))
    if not scale.model.contains(x, y):
        raise ActionInputError(
            f"({x}, {y}) is outside the {scale.model.width}x{scale.model.height} screen"
        )
    return scale.to_screen(x, y)


def _modifiers(keys: Any) -> list[str]:
    """Keys held during a mouse action (["SHIFT"], ["CTRL", "ALT"]) -> normalized modifiers."""
    if keys is None or keys == []:
        return []
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ActionInputError(f"keys must be a list of key names, got {keys!r}")
    modifiers: list[str] = []
    for key in parse_openai_keys(keys):
        if key not in MODIFIER_KEYS:
            raise ActionInputError(f"{key!r} cannot be held during a mouse action")
        if key not in modifiers:
            modifiers.append(key)
    return modifiers


def _notches(pixels: Any, field: str, screen_per_model: float) -> float:
    # Scroll distances are in the model's (scaled) pixels like its coordinates: scale
    # them to the screen, then to wheel notches. Fractions are kept: the backends scroll
    # by notches * 100 px, so 150 px stays 150 px rather than rounding to one notch.
    return round(_number(pixels, field) * screen_per_model / PIXELS_PER_NOTCH, 4)


def _translate(raw: Mapping[str, Any], scale: ScaleMap, wait_seconds: float) -> Action:
    kind = raw.get("type")
    keys = raw.get("keys")
    if kind in ("click", "double_click"):
        button = _BUTTONS.get(str(raw.get("button", "left")))
        if button is None:
            raise ActionInputError(
                f"button must be left, right, wheel, back or forward, got {raw.get('button')!r}"
            )
        x, y = _point(raw, scale)
        count = 2 if kind == "double_click" else 1
        return act.Click(x=x, y=y, button=button, count=count, modifiers=_modifiers(keys))
    if kind == "move":
        x, y = _point(raw, scale)
        return act.Move(x=x, y=y, modifiers=_modifiers(keys))
    if kind == "drag":
        path = raw.get("path")
        if not isinstance(path, list) or len(path) < 2:
            raise ActionInputError(f"path must list at least two points, got {path!r}")
        points = [_point(p if isinstance(p, Mapping) else {}, scale, "path.") for p in path]
        return act.Drag(path=points, modifiers=_modifiers(keys))
    if kind == "scroll":
        x, y = _point(raw, scale)
        dx = _notches(raw.get("scroll_x", 0), "scroll_x", scale.screen.width / scale.model.width)
        dy = _notches(raw.get("scroll_y", 0), "scroll_y", scale.screen.height / scale.model.height)
        return act.Scroll(x=x, y=y, dx=dx, dy=dy, modifiers=_modifiers(keys))
    if kind == "keypress":
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ActionInputError(f"keys must be a list of key names, got {keys!r}")
        return act.Key(keys=parse_openai_keys(keys))
    if kind == "type":
        text = raw.get("text")
        if not isinstance(text, str):
            raise ActionInputError(f"text must be a string, got {text!r}")
        return act.Type(text=text)
    if kind == "wait":
        return act.Wait(seconds=wait_seconds)
    if kind == "screenshot":
        return act.Screenshot()
    raise ActionInputError(f"Unknown computer action {kind!r}" if kind else "Missing action type")


def to_action(
    raw: Mapping[str, Any], scale: ScaleMap, *, wait_seconds: float = DEFAULT_WAIT_SECONDS
) -> Action:
    """One OpenAI action (model coordinates) -> a normalized action in screen pixels.
    Raises ActionInputError with a message meant for the model."""
    try:
        return _translate(raw, scale, wait_seconds)
    except ActionInputError as exc:
        raise ActionInputError(f"Invalid {raw.get('type') or 'computer'} action: {exc}") from None
    except (ComputerError, ValidationError) as exc:
        # Key names (keys.py) and pydantic bounds surface here.
        message = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise ActionInputError(f"Invalid {raw.get('type')} action: {message}") from None
