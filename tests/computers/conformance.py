"""The conformance harness: a script step (one wire action and what the probe page must
record for it), the model's pixel space it is written in, and the checks on what an
action returns (cursor position, zoom capture, screenshot).

The scripts themselves, one per provider, are in wire_scripts.py. Expected positions
are computed apart from the code under test: the exact, unrounded
model * screen / model-size point, which the DOM must hit within 1 px.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageChops

from app.agents.anthropic_tools import cursor_to_model
from app.computers.base import ActionResult, Computer, Display
from app.computers.scaling import ScaleMap, resize_png
from tests.computers.probe_events import (
    Point,
    Recorded,
    Want,
    drag_problems,
    fmt,
    hover_problems,
    near,
    sequence_problems,
)

DISPLAYS = (Display(1024, 768), Display(1280, 800), Display(1920, 1080))
# probe.html's fixed red square (x0, y0, x1, y1), on screen whatever the scroll.
MARKER = (600, 20, 640, 60)
# probe.html's text field, and the point aimed at to focus it.
FIELD_CENTER = (170, 35)

After = Callable[[Computer, ActionResult], Awaitable[list[str]]]


@dataclass(frozen=True)
class Step:
    """One wire action and what the probe must record for it."""

    wire: dict[str, Any]  # as the provider spells it, in model pixels
    events: tuple[Want, ...] | None = ()  # exactly these, moves and input aside (None: unchecked)
    hover: Point | None = None  # the pointer ends here, no button pressed
    drag: tuple[Point, ...] = ()  # the pressed pointer passes through these, ending at the last
    mods: tuple[str, ...] = ()  # modifiers held during the hover or drag moves
    typed: str | None = None  # text whose keys (ASCII, tab as Tab) go down in order
    values: dict[str, str] = field(default_factory=dict)  # field id -> its value afterwards
    scrolled: Point | None = None  # how far the page scrolls
    after: After | None = None  # checks on the result (cursor position, zoom, screenshot)

    @property
    def label(self) -> str:
        return json.dumps(self.wire, ensure_ascii=False)

    def problems(self, recorded: Recorded) -> list[str]:
        problems: list[str] = []
        if self.events is not None:
            problems += sequence_problems(self.events, recorded.without_moves())
        if self.hover is not None:
            problems += hover_problems(recorded, self.hover, self.mods)
        if self.drag:
            problems += drag_problems(recorded, self.drag, self.mods)
        if self.typed is not None:
            want = ["Tab" if c == "\t" else c for c in self.typed if c.isascii()]
            got = [
                e["key"] for e in recorded.events if e["type"] == "keydown" and e["key"].isascii()
            ]
            if got != want:
                problems.append(f"keydowns {got}, expected {want}")
        values = recorded.values()
        problems += [
            f"#{target} holds {values.get(target)!r}, expected {value!r}"
            for target, value in self.values.items()
            if values.get(target) != value
        ]
        if self.scrolled is not None and not near(recorded.scrolled, self.scrolled):
            problems.append(
                f"the page scrolled by {fmt(recorded.scrolled)}, expected {fmt(self.scrolled)}"
            )
        return problems


@dataclass(frozen=True)
class Space:
    """The model's pixel space for one tool and display, and where its points land."""

    scale: ScaleMap

    @property
    def ratio(self) -> Point:
        screen, model = self.scale.screen, self.scale.model
        return (screen.width / model.width, screen.height / model.height)

    def point(self, fx: float, fy: float) -> list[int]:
        """The model pixel at a fraction of the model's width and height."""
        model = self.scale.model
        return [round(fx * (model.width - 1)), round(fy * (model.height - 1))]

    def screen(self, point: Sequence[int]) -> Point:
        """Where a model point must land on screen (unrounded)."""
        return (point[0] * self.ratio[0], point[1] * self.ratio[1])

    def aim(self, screen_point: tuple[int, int]) -> list[int]:
        """The model point a model would pick to hit a screen point."""
        return list(self.scale.to_model(*screen_point))

    def inside_marker(self) -> list[int]:
        """A model-space region whose screen image lies inside the red marker."""
        x0, y0, x1, y1 = MARKER
        rx, ry = self.ratio
        return [math.ceil(x0 / rx), math.ceil(y0 / ry), math.floor(x1 / rx), math.floor(y1 / ry)]


# ------------------------------------------------------------------ checks on results


def _red_box(png: bytes) -> tuple[int, int, int, int] | None:
    """The bounding box of the pure-red pixels of an image (x1, y1 exclusive)."""
    with Image.open(io.BytesIO(png)) as image:
        r, g, b = image.convert("RGB").split()
    mask = ImageChops.multiply(
        ImageChops.multiply(
            r.point(lambda v: 255 if v > 200 else 0), g.point(lambda v: 255 if v < 60 else 0)
        ),
        b.point(lambda v: 255 if v < 60 else 0),
    )
    return mask.getbbox()


def cursor_check(space: Space, model_point: Sequence[int]) -> After:
    """cursor_position, turned back into model pixels as the loop does, names the model's point."""

    async def check(computer: Computer, result: ActionResult) -> list[str]:
        answer = cursor_to_model(result.output or "", space.scale)
        want = f"X={model_point[0]}, Y={model_point[1]}"
        return (
            []
            if answer == want
            else [f"answered {answer!r} (screen {result.output!r}), expected {want!r}"]
        )

    return check


def screenshot_check(space: Space) -> After:
    """The screenshot has the display's size, and once scaled to what the model is shown,
    the marker sits where the model's coordinates for it would click."""

    async def check(computer: Computer, result: ActionResult) -> list[str]:
        shot = await computer.screenshot()
        screen = space.scale.screen
        if (shot.width, shot.height) != (screen.width, screen.height):
            return [
                f"screenshot is {shot.width}x{shot.height}, expected {screen.width}x{screen.height}"
            ]
        if space.scale.is_identity:
            return []  # the clicks above already prove screen pixels are the model's
        box = _red_box(resize_png(shot, space.scale.model).data)
        rx, ry = space.ratio
        want = (MARKER[0] / rx, MARKER[1] / ry, MARKER[2] / rx, MARKER[3] / ry)
        if box is None or not (near(box[:2], want[:2]) and near(box[2:], want[2:])):
            expected = tuple(round(v, 1) for v in want)
            return [f"the marker shows at {box} in the model's image, expected {expected}"]
        return []

    return check


def zoom_check(space: Space, region: Sequence[int]) -> After:
    """The capture covers the region's screen area at native resolution: all marker red."""
    want = ((region[2] - region[0]) * space.ratio[0], (region[3] - region[1]) * space.ratio[1])

    async def check(computer: Computer, result: ActionResult) -> list[str]:
        image = result.image
        if image is None:
            return ["zoom returned no image"]
        problems = []
        if not near((image.width, image.height), want):
            problems.append(
                f"zoom image is {image.width}x{image.height}, expected about {fmt(want)}"
            )
        with Image.open(io.BytesIO(image.data)) as decoded:
            colors = decoded.convert("RGB").getcolors()
        if colors is None or [color for _, color in colors] != [(255, 0, 0)]:
            problems.append(f"zoom image is not all marker red: {(colors or [])[:4]}")
        return problems

    return check
