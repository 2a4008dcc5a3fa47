"""Every normalized action, written in each provider's wire format, with its expectations.

A script is written in the model's pixel space (the size its tool advertises,
`choose_scaled_size`), the way the provider sends it in one turn. `Wire.translate`
parses it with the provider SDK's own types (so a malformed script fails), dumps it
to JSON as the loops store responses, and normalizes it with the real
`split_tool_use` / `call_actions` and `to_action`, as the loops do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from anthropic.types.beta import BetaComputerToolUseBlock, BetaToolUseBlock
from openai.types.responses import ResponseComputerToolCall
from pydantic import TypeAdapter

from app.agents import anthropic_tools, openai_tools
from app.computers.base import Action, Display
from app.computers.scaling import ScaleMap, choose_scaled_size
from tests.computers.conformance import (
    FIELD_CENTER,
    Space,
    Step,
    cursor_check,
    screenshot_check,
    zoom_check,
)
from tests.computers.probe_events import Point, Want, click_events, held, key_events

TYPED = "Hé!\tok"  # non-ASCII goes in as text; the tab moves on to the textarea
NOTCH_PX = 100  # one wheel notch, as Chromium scrolls on Linux
SHIFT, ALT, CHORD = ("Shift",), ("Alt",), ("Control", "Shift")


def drag_events(start: Point, end: Point, mods: tuple[str, ...]) -> tuple[Want, ...]:
    """Pressed at the start, released at the end; Chromium then clicks the element both
    ends share (the page body here)."""
    return held(
        mods,
        (
            Want("mousedown", start, 0, 1, mods),
            Want("mouseup", end, 0, 1, mods),
            Want("click", end, 0, 1, mods),
        ),
    )


def wheel_step(wire: dict[str, Any], at: Point, delta: Point, mods: tuple[str, ...]) -> Step:
    wheel = Want("wheel", at, delta=delta, mods=mods)
    return Step(wire, held(mods, (wheel,)), scrolled=delta)


def typing_steps(click: dict[str, Any], at: Point, type_: dict[str, Any]) -> list[Step]:
    """Focus the field, then type into it and (through the tab) into the textarea."""
    return [
        Step(click, click_events(at)),
        Step(type_, None, typed=TYPED, values={"field": "Hé!", "area": "ok"}),
    ]


def anthropic_script(space: Space, tool: str) -> list[Step]:
    """Every Anthropic action; the GA toolset adds key repeat, 20251124 and GA add zoom."""
    at = space.screen
    corner, far, center = space.point(0, 0), space.point(1, 1), space.point(0.5, 0.5)
    double, triple, chord = space.point(0.73, 0.21), space.point(0.31, 0.88), space.point(0.9, 0.4)
    hover, start, end = space.point(0.62, 0.66), space.point(0.4, 0.5), space.point(0.46, 0.56)
    field = space.aim(FIELD_CENTER)

    def scroll(
        direction: str, amount: int, *, here: bool = True, mods: tuple[str, ...] = ()
    ) -> Step:
        sign = {"up": (0, -1), "down": (0, 1), "left": (-1, 0), "right": (1, 0)}[direction]
        wire: dict[str, Any] = {
            "action": "scroll",
            "scroll_direction": direction,
            "scroll_amount": amount,
        }
        if here:  # else at the cursor, which the previous scroll left at the center
            wire["coordinate"] = center
        if mods:
            wire["text"] = "+".join(mod.lower() for mod in mods)
        delta = (sign[0] * amount * NOTCH_PX, sign[1] * amount * NOTCH_PX)
        return wheel_step(wire, at(center), delta, mods)

    steps = [
        Step({"action": "left_click", "coordinate": corner}, click_events(at(corner))),
        Step({"action": "right_click", "coordinate": far}, click_events(at(far), button=2)),
        Step({"action": "middle_click", "coordinate": center}, click_events(at(center), button=1)),
        Step({"action": "double_click", "coordinate": double}, click_events(at(double), count=2)),
        Step({"action": "triple_click", "coordinate": triple}, click_events(at(triple), count=3)),
        Step(
            {"action": "left_click", "coordinate": chord, "text": "ctrl+shift"},
            held(CHORD, click_events(at(chord), mods=CHORD)),
        ),
        Step({"action": "mouse_move", "coordinate": hover}, hover=at(hover)),
        Step({"action": "left_click"}, click_events(at(hover))),  # at the cursor
        Step({"action": "left_mouse_down"}, (Want("mousedown", at(hover), 0, 1),)),
        Step({"action": "left_mouse_up"}, click_events(at(hover))[1:]),
        Step(
            {
                "action": "left_click_drag",
                "start_coordinate": start,
                "coordinate": end,
                "text": "shift",
            },
            drag_events(at(start), at(end), SHIFT),
            drag=(at(start), at(end)),
            mods=SHIFT,
        ),
        Step({"action": "cursor_position"}, after=cursor_check(space, end)),
        *typing_steps(
            {"action": "left_click", "coordinate": field},
            at(field),
            {"action": "type", "text": TYPED},
        ),
        Step({"action": "key", "text": "ctrl+a"}, key_events(("Control", "a"))),
        Step(
            {"action": "key", "text": "BackSpace"}, key_events(("Backspace",)), values={"area": ""}
        ),
        Step(
            {"action": "key", "text": "shift+x"}, key_events(("Shift", "X")), values={"area": "X"}
        ),
        Step({"action": "hold_key", "text": "shift", "duration": 0}, key_events(SHIFT)),
        Step({"action": "wait", "duration": 0}),
        Step({"action": "screenshot"}, after=screenshot_check(space)),
        # Scrolls come last: they move the page under the points above.
        scroll("down", 3),
        scroll("right", 2, here=False),
        scroll("up", 1, mods=ALT),
        scroll("left", 1),
    ]
    if tool == anthropic_tools.TOOLSET:
        repeat = {"action": "key", "text": "Down", "repeat": 3}
        steps.append(Step(repeat, key_events(("ArrowDown",)) * 3))
    if tool in (anthropic_tools.TOOLSET, "computer_20251124"):
        region = space.inside_marker()
        steps.append(Step({"action": "zoom", "region": region}, after=zoom_check(space, region)))
    return steps


def openai_script(space: Space) -> list[Step]:
    """Every OpenAI action (the preview and GA tools share their shapes)."""
    at = space.screen
    corner, far, center = space.point(0, 0), space.point(1, 1), space.point(0.5, 0.5)
    double, chord, hover = space.point(0.73, 0.21), space.point(0.9, 0.4), space.point(0.62, 0.66)
    start, via, end = space.point(0.4, 0.5), space.point(0.44, 0.45), space.point(0.47, 0.56)
    field = space.aim(FIELD_CENTER)

    def xy(point: list[int]) -> dict[str, int]:
        return {"x": point[0], "y": point[1]}

    def scroll(dx: int, dy: int, mods: tuple[str, ...] = ()) -> Step:
        # scroll_x/scroll_y are pixels of the model's image: screen pixels once scaled.
        wire: dict[str, Any] = {"type": "scroll", **xy(center), "scroll_x": dx, "scroll_y": dy}
        if mods:
            wire["keys"] = [mod.upper() for mod in mods]
        return wheel_step(wire, at(center), (dx * space.ratio[0], dy * space.ratio[1]), mods)

    return [
        Step({"type": "click", "button": "left", **xy(corner)}, click_events(at(corner))),
        Step({"type": "click", "button": "right", **xy(far)}, click_events(at(far), button=2)),
        Step(
            {"type": "click", "button": "wheel", **xy(center)}, click_events(at(center), button=1)
        ),
        Step({"type": "double_click", **xy(double)}, click_events(at(double), count=2)),
        Step(
            {"type": "click", "button": "left", **xy(chord), "keys": ["CTRL", "SHIFT"]},
            held(CHORD, click_events(at(chord), mods=CHORD)),
        ),
        Step(
            {"type": "move", **xy(hover), "keys": ["ALT"]},
            key_events(ALT),
            hover=at(hover),
            mods=ALT,
        ),
        Step(
            {"type": "drag", "path": [xy(start), xy(via), xy(end)], "keys": ["SHIFT"]},
            drag_events(at(start), at(end), SHIFT),
            drag=(at(start), at(via), at(end)),
            mods=SHIFT,
        ),
        *typing_steps(
            {"type": "click", "button": "left", **xy(field)},
            at(field),
            {"type": "type", "text": TYPED},
        ),
        Step({"type": "keypress", "keys": ["CTRL", "A"]}, key_events(("Control", "a"))),
        Step(
            {"type": "keypress", "keys": ["BACKSPACE"]},
            key_events(("Backspace",)),
            values={"area": ""},
        ),
        Step(
            {"type": "keypress", "keys": ["SHIFT", "X"]},
            key_events(("Shift", "X")),
            values={"area": "X"},
        ),
        Step({"type": "wait"}),
        Step({"type": "screenshot"}, after=screenshot_check(space)),
        scroll(0, 300),
        scroll(250, 0, ALT),
        scroll(-120, -200),
    ]


_BETA_BLOCK = TypeAdapter(BetaToolUseBlock)
_TOOLSET_BLOCK: TypeAdapter[Any] = TypeAdapter(BetaComputerToolUseBlock)
_COMPUTER_CALL = TypeAdapter(ResponseComputerToolCall)


@dataclass(frozen=True)
class Wire:
    """One provider tool: the size it advertises, how it spells actions, how they translate."""

    provider: Literal["anthropic", "openai"]
    tool: str

    @property
    def id(self) -> str:
        return self.tool

    def space(self, display: Display) -> Space:
        return Space(ScaleMap(display, choose_scaled_size(display, self.provider, self.tool)))

    def script(self, space: Space) -> list[Step]:
        if self.provider == "anthropic":
            return anthropic_script(space, self.tool)
        return openai_script(space)

    def translate(self, wires: list[dict[str, Any]], scale: ScaleMap) -> list[Action]:
        """The actions of one turn, as the provider sends them, normalized."""
        if self.provider == "anthropic":
            blocks = [self._tool_use(index, wire) for index, wire in enumerate(wires)]
            return [
                anthropic_tools.to_action(*anthropic_tools.split_tool_use(block), scale)
                for block in blocks
            ]
        if self.tool == openai_tools.GA:  # one computer_call carries the whole batch
            calls = [self._computer_call(0, {"actions": wires})]
        else:  # the preview tool: one action per call
            calls = [self._computer_call(i, {"action": wire}) for i, wire in enumerate(wires)]
        # wait_seconds=0: the wire `wait` has no duration, and the suite has no time to spare.
        return [
            openai_tools.to_action(raw, scale, wait_seconds=0.0)
            for call in calls
            for raw in openai_tools.call_actions(call)
        ]

    def _tool_use(self, index: int, wire: dict[str, Any]) -> dict[str, Any]:
        params = dict(wire)
        name = params.pop("action")
        block: dict[str, Any] = {"type": "tool_use", "id": f"toolu_{index:02d}"}
        if self.tool == anthropic_tools.TOOLSET:
            # The GA toolset: each action is its own tool_use, named after it.
            block |= {"name": name, "toolset_name": "computer", "input": params}
            parsed = _TOOLSET_BLOCK.validate_python(block)
        else:
            block |= {"name": "computer", "input": {"action": name, **params}}
            parsed = _BETA_BLOCK.validate_python(block)
        dumped: dict[str, Any] = parsed.model_dump(mode="json")
        return dumped

    def _computer_call(self, index: int, body: dict[str, Any]) -> dict[str, Any]:
        call = {
            "type": "computer_call",
            "id": f"cu_{index:02d}",
            "call_id": f"call_{index:02d}",
            "status": "completed",
            "pending_safety_checks": [],
            **body,
        }
        return _COMPUTER_CALL.validate_python(call).model_dump(mode="json")


WIRES = (
    Wire("anthropic", "computer_20250124"),
    Wire("anthropic", "computer_20251124"),
    Wire("anthropic", anthropic_tools.TOOLSET),
    Wire("openai", openai_tools.PREVIEW),
    Wire("openai", openai_tools.GA),
)
