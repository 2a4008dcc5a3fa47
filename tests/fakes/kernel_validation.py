"""What the fake Kernel API accepts, checked the way Kernel checks it.

Bodies follow the SDK's request types (kernel 0.131); unknown fields are
refused so a misspelt parameter cannot pass silently. The checks mirror
Kernel's VM API server: coordinates inside the screen, a drag path of at
least two [x, y] points, whole non-zero wheel deltas, and keys that xdotool
knows: X11 keysyms ("Return", "Page_Down", "BackSpace"; case-sensitive, so
DOM names such as "Enter" or "ArrowUp" fail), xdotool's case-insensitive
modifier aliases ("Ctrl"), "U00E9"-style Unicode keysyms, "+"-joined chords.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

BUTTONS = ("left", "right", "middle", "back", "forward")
DRAG_BUTTONS = ("left", "middle", "right")
CLICK_TYPES = ("down", "up", "click")

FIELDS: dict[str, frozenset[str]] = {
    "create": frozenset(
        {"headless", "viewport", "timeout_seconds", "start_url", "stealth", "name", "kiosk_mode"}
    ),
    "click_mouse": frozenset({"x", "y", "button", "click_type", "hold_keys", "num_clicks"}),
    "move_mouse": frozenset({"x", "y", "duration_ms", "hold_keys", "smooth"}),
    "drag_mouse": frozenset(
        {
            "path",
            "button",
            "delay",
            "duration_ms",
            "hold_keys",
            "smooth",
            "step_delay_ms",
            "steps_per_segment",
        }
    ),
    "scroll": frozenset({"x", "y", "delta_x", "delta_y", "hold_keys"}),
    "press_key": frozenset({"keys", "duration", "hold_keys"}),
    "type": frozenset({"text", "delay"}),
    "screenshot": frozenset({"region"}),
    "get_mouse_position": frozenset(),
}

_KEYSYMS = frozenset(
    {
        *(
            f"{side}_{hand}"
            for side in ("Control", "Shift", "Alt", "Super", "Meta")
            for hand in "LR"
        ),
        "ISO_Level3_Shift",
        "Return",
        "KP_Enter",
        "Tab",
        "ISO_Left_Tab",
        "Escape",
        "BackSpace",
        "Delete",
        "Insert",
        "Home",
        "End",
        "Prior",
        "Next",
        "Page_Up",
        "Page_Down",
        "Up",
        "Down",
        "Left",
        "Right",
        "Caps_Lock",
        "Num_Lock",
        "Scroll_Lock",
        "Pause",
        "Print",
        "Menu",
        *(f"F{n}" for n in range(1, 25)),
        *(
            f"XF86Audio{name}"
            for name in ("Mute", "LowerVolume", "RaiseVolume", "Next", "Prev", "Play")
        ),
        *"space exclam quotedbl numbersign dollar percent ampersand apostrophe parenleft "
        "parenright asterisk plus comma minus period slash colon semicolon less equal greater "
        "question at bracketleft backslash bracketright asciicircum underscore grave braceleft "
        "bar braceright asciitilde".split(),
    }
)
_MODIFIER_ALIASES = frozenset({"ctrl", "control", "shift", "alt", "meta", "super"})
_UNICODE_KEYSYM = re.compile(r"U[0-9A-Fa-f]{4,6}")


class BadRequest(Exception):
    """A 400 with Kernel's error envelope."""


def check_keysym(name: str) -> None:
    if (
        name in _KEYSYMS
        or name.lower() in _MODIFIER_ALIASES
        or (len(name) == 1 and name.isascii() and name.isalnum())
        or _UNICODE_KEYSYM.fullmatch(name)
        or name == "-"  # Kernel's documented alias of "minus"
    ):
        return
    raise BadRequest(f"(symbol) No such key name {name!r}")


def check_key_item(item: Any) -> None:
    if not isinstance(item, str) or not item:
        raise BadRequest(f"key {item!r} must be a non-empty string")
    for part in item.split("+"):
        if not part:
            raise BadRequest(f"malformed key combination {item!r}")
        check_keysym(part)


def _int(
    body: Mapping[str, Any], field: str, *, required: bool = False, low: int = 0
) -> int | None:
    if field not in body:
        if required:
            raise BadRequest(f"{field} is required")
        return None
    value = body[field]
    # JSON 3.0 is not an integer for Kernel's schema (and bool is no int either).
    if type(value) is not int:
        raise BadRequest(f"{field} must be an integer, got {value!r}")
    if value < low:
        raise BadRequest(f"{field} must be >= {low}")
    return value


def _check_point(x: Any, y: Any, size: tuple[int, int]) -> None:
    if type(x) is not int or type(y) is not int:
        raise BadRequest(f"coordinates must be integers, got {[x, y]!r}")
    if x < 0 or y < 0:
        raise BadRequest("coordinates must be non-negative")
    if x >= size[0] or y >= size[1]:
        raise BadRequest(f"coordinates exceed screen bounds (max: {size[0] - 1}x{size[1] - 1})")


def _check_choice(body: Mapping[str, Any], field: str, choices: tuple[str, ...]) -> None:
    if field in body and body[field] not in choices:
        raise BadRequest(f"{field} must be one of {list(choices)}, got {body[field]!r}")


def _check_bool(body: Mapping[str, Any], field: str) -> None:
    if field in body and not isinstance(body[field], bool):
        raise BadRequest(f"{field} must be a boolean")


def _check_hold_keys(body: Mapping[str, Any]) -> None:
    if "hold_keys" not in body:
        return
    keys = body["hold_keys"]
    if not isinstance(keys, list):
        raise BadRequest("hold_keys must be an array of key symbols")
    for key in keys:
        check_key_item(key)


def check_fields(op: str, body: Any) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    unknown = sorted(set(body) - FIELDS[op])
    if unknown:
        raise BadRequest(f"unknown field(s) for {op}: {unknown}")
    return body


def check_create(body: Mapping[str, Any]) -> None:
    _check_bool(body, "headless")
    if "viewport" in body:
        viewport = body["viewport"]
        if not isinstance(viewport, dict) or set(viewport) - {"width", "height", "refresh_rate"}:
            raise BadRequest("viewport must be {width, height, refresh_rate?}")
        _int(viewport, "width", required=True, low=1)
        _int(viewport, "height", required=True, low=1)
    timeout = _int(body, "timeout_seconds", low=10)
    if timeout is not None and timeout > 259200:
        raise BadRequest("timeout_seconds must be at most 259200")
    if "start_url" in body and not isinstance(body["start_url"], str):
        raise BadRequest("start_url must be a string")


def check_action(op: str, body: Mapping[str, Any], size: tuple[int, int]) -> None:
    """Raise BadRequest unless `body` is a valid request for computer operation `op`."""
    _check_hold_keys(body)
    if op in ("click_mouse", "move_mouse", "scroll"):
        _check_point(body.get("x"), body.get("y"), size)
    if op == "click_mouse":
        _check_choice(body, "button", BUTTONS)
        _check_choice(body, "click_type", CLICK_TYPES)
        _int(body, "num_clicks", low=1)
    elif op == "move_mouse":
        _check_bool(body, "smooth")
        _int(body, "duration_ms", low=50)
    elif op == "drag_mouse":
        path = body.get("path")
        if not isinstance(path, list) or len(path) < 2:
            raise BadRequest("path must contain at least two points")
        for index, point in enumerate(path):
            if not isinstance(point, list) or len(point) != 2:
                raise BadRequest(f"path[{index}] must be [x,y]")
            _check_point(point[0], point[1], size)
        _check_choice(body, "button", DRAG_BUTTONS)
        _check_bool(body, "smooth")
        for field in ("delay", "duration_ms", "step_delay_ms"):
            _int(body, field)
        _int(body, "steps_per_segment", low=1)
    elif op == "scroll":
        dx, dy = _int(body, "delta_x", low=-(10**6)), _int(body, "delta_y", low=-(10**6))
        if not dx and not dy:
            raise BadRequest("at least one of delta_x or delta_y must be non-zero")
    elif op == "press_key":
        keys = body.get("keys")
        if not isinstance(keys, list) or not keys:
            raise BadRequest("keys must contain at least one key symbol")
        for item in keys:
            check_key_item(item)
        _int(body, "duration")
    elif op == "type":
        if not isinstance(body.get("text"), str):
            raise BadRequest("text is required")
        _int(body, "delay")
    elif op == "screenshot" and "region" in body:
        region = body["region"]
        if not isinstance(region, dict) or set(region) != {"x", "y", "width", "height"}:
            raise BadRequest("region must be {x, y, width, height}")
        x, y = _int(region, "x"), _int(region, "y")
        w, h = _int(region, "width", low=1), _int(region, "height", low=1)
        assert x is not None and y is not None and w is not None and h is not None
        if x + w > size[0] or y + h > size[1]:
            raise BadRequest("region exceeds screen bounds")
