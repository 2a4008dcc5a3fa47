"""What the probe page recorded for one step, and the checks a conformance step makes on it.

Expectations hold exact (unrounded) screen points; a recorded event matches
when its clientX/clientY is within TOLERANCE_PX of them. Mouse moves are kept
apart from the other events: how many intermediate moves a backend sends is
its own business, so only where a hover ends and which points a drag passes
through are checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Point = tuple[float, float]
Event = dict[str, Any]

TOLERANCE_PX = 1.0
# Normalized modifier names -> the MouseEvent/KeyboardEvent flag they set.
FLAGS = {"Control": "ctrl", "Shift": "shift", "Alt": "alt", "Meta": "meta"}
# Reads and clears the probe's record in one round trip, with the scroll offset after it.
DRAIN_JS = "() => ({events: window.__events.splice(0), scroll: [scrollX, scrollY]})"


def near(got: tuple[Any, Any], want: Point) -> bool:
    return all(
        isinstance(g, int | float) and abs(g - w) <= TOLERANCE_PX
        for g, w in zip(got, want, strict=True)
    )


def point_of(event: Event) -> tuple[Any, Any]:
    return (event["x"], event["y"])


def fmt(point: tuple[Any, Any]) -> str:
    return f"({point[0]:g}, {point[1]:g})"


def flags_of(event: Event) -> set[str]:
    return {flag for flag in FLAGS.values() if event.get(flag)}


def describe(event: Event) -> str:
    """A recorded event in one short line: `mousedown (412, 300) button=0 detail=1 +shift`."""
    parts = [event["type"]]
    if event.get("key") is not None:
        parts.append(repr(event["key"]))
    elif event.get("x") is not None:
        parts.append(fmt(point_of(event)))
    if event["type"] == "wheel":
        parts.append(f"delta={fmt((event['deltaX'], event['deltaY']))}")
    elif event["type"] == "mousemove":
        parts.append(f"buttons={event['buttons']}")
    elif event.get("button") is not None and event["type"] not in ("keydown", "keyup"):
        parts.append(f"button={event['button']} detail={event['detail']}")
    parts.extend(f"+{flag}" for flag in sorted(flags_of(event)))
    return " ".join(parts)


@dataclass(frozen=True)
class Want:
    """One DOM event a step must produce; fields left None are not checked."""

    type: str
    at: Point | None = None
    button: int | None = None
    detail: int | None = None
    mods: tuple[str, ...] | None = None  # normalized names of the modifiers held
    key: str | None = None
    delta: Point | None = None

    def __str__(self) -> str:
        parts = [self.type]
        if self.key is not None:
            parts.append(repr(self.key))
        if self.at is not None:
            parts.append(fmt(self.at))
        if self.delta is not None:
            parts.append(f"delta={fmt(self.delta)}")
        if self.button is not None:
            parts.append(f"button={self.button} detail={self.detail}")
        parts.extend(f"+{FLAGS[mod]}" for mod in self.mods or ())
        return " ".join(parts)

    def matches(self, got: Event) -> bool:
        return (
            got["type"] == self.type
            and (self.at is None or near(point_of(got), self.at))
            and (self.button is None or got["button"] == self.button)
            and (self.detail is None or got["detail"] == self.detail)
            and (self.key is None or got["key"] == self.key)
            and (self.delta is None or near((got["deltaX"], got["deltaY"]), self.delta))
            and (self.mods is None or flags_of(got) == {FLAGS[mod] for mod in self.mods})
        )


def sequence_problems(want: tuple[Want, ...], got: list[Event]) -> list[str]:
    """Empty when `got` is exactly `want`, else one readable comparison."""
    if len(want) == len(got) and all(w.matches(g) for w, g in zip(want, got, strict=True)):
        return []
    first = next(
        (i for i, (w, g) in enumerate(zip(want, got, strict=False)) if not w.matches(g)),
        min(len(want), len(got)),
    )
    return [
        f"events differ from #{first}:\n"
        f"      expected: {', '.join(map(str, want)) or 'none'}\n"
        f"      recorded: {', '.join(map(describe, got)) or 'none'}"
    ]


def click_events(
    at: Point, *, button: int = 0, count: int = 1, mods: tuple[str, ...] = ()
) -> tuple[Want, ...]:
    """What a real mouse produces for a click: Chromium's order on Linux.

    Left: (mousedown, mouseup, click) per click with detail 1..count, and dblclick after
    the second. Right: the context menu opens on mousedown. Other buttons: auxclick.
    """

    def ev(kind: str, detail: int) -> Want:
        return Want(kind, at, button, detail, mods)

    if button == 2:
        return (ev("mousedown", 1), ev("contextmenu", 0), ev("mouseup", 1), ev("auxclick", 1))
    if button != 0:
        return (ev("mousedown", 1), ev("mouseup", 1), ev("auxclick", 1))
    events: list[Want] = []
    for n in range(1, count + 1):
        events += [ev("mousedown", n), ev("mouseup", n), ev("click", n)]
        if n == 2:
            events.append(ev("dblclick", 2))
    return tuple(events)


def key_events(keys: tuple[str, ...]) -> tuple[Want, ...]:
    """A chord: keydowns in order, keyups in reverse.

    Flags are checked on the chord's other keys only: what a modifier's own event
    reports for itself differs between platforms (Meta's keydown on Linux lacks metaKey).
    """
    modifiers = tuple(key for key in keys if key in FLAGS)

    def ev(kind: str, key: str) -> Want:
        return Want(kind, key=key, mods=None if key in FLAGS else modifiers)

    return tuple(ev("keydown", k) for k in keys) + tuple(ev("keyup", k) for k in reversed(keys))


def held(mods: tuple[str, ...], inner: tuple[Want, ...]) -> tuple[Want, ...]:
    """`inner` with modifier keys pressed before it and released after it, like a person."""
    downs = key_events(mods)
    return downs[: len(mods)] + inner + downs[len(mods) :]


@dataclass(frozen=True)
class Recorded:
    """What one step left on the probe page."""

    events: list[Event]
    scrolled: Point  # how far the page scrolled during the step

    def without_moves(self) -> list[Event]:
        # `input` events belong to typing (checked through field values), moves to their own checks.
        return [e for e in self.events if e["type"] not in ("mousemove", "input")]

    def moves(self) -> list[Event]:
        return [e for e in self.events if e["type"] == "mousemove"]

    def values(self) -> dict[str, str]:
        """The last value each field reported through an `input` event."""
        return {e["target"]: e["value"] for e in self.events if e["type"] == "input"}


def hover_problems(recorded: Recorded, end: Point, mods: tuple[str, ...]) -> list[str]:
    moves = recorded.moves()
    if not moves:
        return [f"no mousemove; expected the pointer to end at {fmt(end)}"]
    last = moves[-1]
    want = Want("mousemove", end, mods=mods)
    if last["buttons"] != 0 or not want.matches(last):
        return [f"the pointer ended with {describe(last)}, expected {want}"]
    return []


def drag_problems(recorded: Recorded, path: tuple[Point, ...], mods: tuple[str, ...]) -> list[str]:
    """The pressed pointer passes through every point of the path in order, ends at the
    last, and has the modifiers held all along."""
    pressed = [e for e in recorded.moves() if e["buttons"] & 1]
    trail = ", ".join(fmt(point_of(e)) for e in pressed) or "none"
    problems = []
    unheld = [e for e in pressed if not Want("mousemove", mods=mods).matches(e)]
    if unheld:
        problems.append(f"{describe(unheld[0])}: the modifiers {list(mods)} are not held")
    position = 0
    for point in path[1:]:
        found = next(
            (i for i in range(position, len(pressed)) if near(point_of(pressed[i]), point)), None
        )
        if found is None:
            return [*problems, f"the pressed pointer never passed {fmt(point)}: {trail}"]
        position = found
    if not near(point_of(pressed[-1]), path[-1]):
        problems.append(f"the drag ended at {fmt(point_of(pressed[-1]))}, not {fmt(path[-1])}")
    return problems
