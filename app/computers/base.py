"""The Computer protocol and the normalized actions every backend implements.

Provider loops translate their wire actions into these (SPEC.md "Normalized
actions"); a backend never sees a provider's format. Coordinates are in the
computer's own pixels: loops scale model coordinates back before they build
an action (see computers/scaling.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

MouseButton = Literal["left", "right", "middle", "back", "forward"]


class _Action(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Click(_Action):
    type: Literal["click"] = "click"
    x: int | None = None
    y: int | None = None
    button: MouseButton = "left"
    count: int = Field(default=1, ge=1, le=3)
    modifiers: list[str] = Field(default_factory=list)


class MouseDown(_Action):
    type: Literal["mouse_down"] = "mouse_down"
    button: MouseButton = "left"


class MouseUp(_Action):
    type: Literal["mouse_up"] = "mouse_up"
    button: MouseButton = "left"


class Move(_Action):
    type: Literal["move"] = "move"
    x: int
    y: int
    modifiers: list[str] = Field(default_factory=list)


class Drag(_Action):
    type: Literal["drag"] = "drag"
    path: list[tuple[int, int]] = Field(min_length=2)
    modifiers: list[str] = Field(default_factory=list)


class Scroll(_Action):
    """dx/dy in wheel notches: positive dy scrolls down, positive dx right."""

    type: Literal["scroll"] = "scroll"
    x: int | None = None
    y: int | None = None
    dx: float = 0
    dy: float = 0
    modifiers: list[str] = Field(default_factory=list)


class Type(_Action):
    type: Literal["type"] = "type"
    text: str


class Key(_Action):
    """A chord pressed together (keys in the backend-neutral names of computers/keys.py)."""

    type: Literal["key"] = "key"
    keys: list[str] = Field(min_length=1)
    repeat: int = Field(default=1, ge=1, le=100)


class HoldKey(_Action):
    type: Literal["hold_key"] = "hold_key"
    keys: list[str] = Field(min_length=1)
    seconds: float = Field(ge=0, le=100)


class Wait(_Action):
    type: Literal["wait"] = "wait"
    seconds: float = Field(default=1.0, ge=0, le=100)


class Screenshot(_Action):
    type: Literal["screenshot"] = "screenshot"


class Zoom(_Action):
    """region = (x0, y0, x1, y1) in the computer's pixels."""

    type: Literal["zoom"] = "zoom"
    region: tuple[int, int, int, int]


class CursorPosition(_Action):
    type: Literal["cursor_position"] = "cursor_position"


Action = Annotated[
    Click
    | MouseDown
    | MouseUp
    | Move
    | Drag
    | Scroll
    | Type
    | Key
    | HoldKey
    | Wait
    | Screenshot
    | Zoom
    | CursorPosition,
    Field(discriminator="type"),
]
ACTION_ADAPTER: TypeAdapter[Action] = TypeAdapter(Action)


def action_to_json(action: Action) -> dict[str, Any]:
    return action.model_dump(mode="json")


@dataclass(frozen=True)
class Display:
    width: int
    height: int

    def contains(self, x: int, y: int) -> bool:
        """Whether (x, y) is a pixel of this display."""
        return 0 <= x < self.width and 0 <= y < self.height

    def check_point(self, x: int, y: int) -> None:
        """Raise ComputerError (shown to the model) for a point off the screen."""
        if not self.contains(x, y):
            raise ComputerError(
                f"Coordinate ({x}, {y}) is outside the {self.width}x{self.height} screen"
            )

    def check_region(self, region: tuple[int, int, int, int]) -> None:
        """Raise ComputerError unless region (x0, y0, x1, y1) is a non-empty area on screen."""
        x0, y0, x1, y1 = region
        if not (0 <= x0 < x1 <= self.width and 0 <= y0 < y1 <= self.height):
            raise ComputerError(
                f"Region {list(region)} must satisfy 0 <= x0 < x1 <= {self.width} "
                f"and 0 <= y0 < y1 <= {self.height}"
            )


@dataclass(frozen=True)
class ShotImage:
    """A captured image: encoded bytes plus their pixel size."""

    data: bytes
    media_type: str
    width: int
    height: int


@dataclass(frozen=True)
class ActionResult:
    """What executing one action produced (the frozen value object the loops consume).

    `output` is text for the model (cursor_position's "X=.., Y=.."), `image` is a
    zoom capture; the loop takes its own screenshot afterwards.
    """

    output: str | None = None
    image: ShotImage | None = None


class ComputerError(Exception):
    """An action could not be executed; the message is shown to the model."""


@runtime_checkable
class Computer(Protocol):
    """Anything that can take normalized actions and screenshots."""

    display: Display

    async def start(self) -> None: ...

    async def execute(self, action: Action) -> ActionResult: ...

    async def screenshot(self) -> ShotImage: ...

    async def current_url(self) -> str | None: ...

    async def close(self) -> None: ...

    def is_alive(self) -> bool:
        """False once the computer can no longer act (closed, or its browser died)."""
        ...
