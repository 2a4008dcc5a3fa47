"""Screen size <-> the size advertised to the model, and screenshot resizing.

Models read coordinates off the image they are shown. When a provider would
downscale a large screenshot itself, the model answers in the downscaled
space without knowing it; so the loops downscale first (`resize_png`),
advertise the smaller size, and map each coordinate back with a `ScaleMap`.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from PIL import Image

from app.computers.base import Display, ShotImage

# Anthropic beta tools: the quickstart's targets, chosen by aspect ratio.
XGA = Display(1024, 768)
WXGA = Display(1280, 800)
FWXGA = Display(1366, 768)
ANTHROPIC_TARGETS = (XGA, WXGA, FWXGA)
ASPECT_TOLERANCE = 0.02

ANTHROPIC_BETA_TOOLS = frozenset({"computer_20241022", "computer_20250124", "computer_20251124"})
ANTHROPIC_GA_TOOLSET = "computer_toolset_20260801"
OPENAI_TOOLS = frozenset({"computer_use_preview", "computer"})


@dataclass(frozen=True)
class ImageLimits:
    """The largest image a model sees without the provider shrinking it."""

    max_long_edge: int
    max_pixels: int
    max_short_edge: int | None = None


# Beta-tool models: 1568 px long edge, ~1.15 MP (docs' table: 1092x1092, 1568x784).
ANTHROPIC_BETA_LIMITS = ImageLimits(max_long_edge=1568, max_pixels=int(1.15 * 1024 * 1024))
# Assumption: the GA toolset targets Claude 5.x, which we take to have the
# high-resolution budget published for Opus 4.7 (2576 px long edge, 3.75 MP).
ANTHROPIC_GA_LIMITS = ImageLimits(max_long_edge=2576, max_pixels=int(3.75 * 1000 * 1000))
# computer_use_preview sees images through "high" detail processing: fit in
# 2048x2048, then the short edge down to 768. Sending that size ourselves
# keeps what the model sees identical to what we advertise.
OPENAI_PREVIEW_LIMITS = ImageLimits(max_long_edge=2048, max_pixels=2048 * 768, max_short_edge=768)
# Assumption: the GA `computer` tool (gpt-5.4+) reads screenshots at
# "original" detail, documented up to 10.24 MP and 6000 px per side.
OPENAI_GA_LIMITS = ImageLimits(max_long_edge=6000, max_pixels=10_240_000)


def _round_half_up(value: float) -> int:
    # round() rounds half to even, which would make a round trip depend on parity.
    return math.floor(value + 0.5)


@dataclass(frozen=True)
class ScaleMap:
    """Maps points between the real display and the size advertised to the model.

    Model -> screen -> model is exact when the model size is not larger than
    the screen; screen -> model -> screen stays within 1 px while the scale
    factor is at most 2 (beyond that the model space simply has fewer pixels).
    """

    screen: Display
    model: Display

    @classmethod
    def identity(cls, display: Display) -> ScaleMap:
        return cls(display, display)

    @property
    def is_identity(self) -> bool:
        return self.screen == self.model

    def to_model(self, x: int, y: int) -> tuple[int, int]:
        """A screen point -> the model's pixel space."""
        return (
            _round_half_up(x * self.model.width / self.screen.width),
            _round_half_up(y * self.model.height / self.screen.height),
        )

    def to_screen(self, x: int, y: int) -> tuple[int, int]:
        """A point from the model (in its advertised space) -> the screen's pixels."""
        return (
            _round_half_up(x * self.screen.width / self.model.width),
            _round_half_up(y * self.screen.height / self.model.height),
        )

    def region_to_screen(self, region: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        """A zoom region (x0, y0, x1, y1) in model space -> screen pixels."""
        x0, y0 = self.to_screen(region[0], region[1])
        x1, y1 = self.to_screen(region[2], region[3])
        return (x0, y0, x1, y1)


def fit_within(display: Display, limits: ImageLimits) -> Display:
    """The largest size with the display's aspect ratio that satisfies `limits`."""
    width, height = display.width, display.height
    factor = min(
        1.0,
        limits.max_long_edge / max(width, height),
        math.sqrt(limits.max_pixels / (width * height)),
    )
    if limits.max_short_edge is not None:
        factor = min(factor, limits.max_short_edge / min(width, height))
    if factor >= 1.0:
        return display
    # Floor so the result never exceeds a limit; keep at least one pixel.
    return Display(max(1, math.floor(width * factor)), max(1, math.floor(height * factor)))


def limits_for(provider: str, tool_version: str | None) -> ImageLimits:
    """The image limits of a provider's tool version (None = the provider's default)."""
    if provider == "anthropic":
        if tool_version == ANTHROPIC_GA_TOOLSET:
            return ANTHROPIC_GA_LIMITS
        if tool_version is None or tool_version in ANTHROPIC_BETA_TOOLS:
            return ANTHROPIC_BETA_LIMITS
    elif provider == "openai":
        if tool_version == "computer_use_preview":
            return OPENAI_PREVIEW_LIMITS
        if tool_version is None or tool_version == "computer":
            return OPENAI_GA_LIMITS
    raise ValueError(f"unknown provider/tool version: {provider}/{tool_version}")


def choose_scaled_size(display: Display, provider: str, tool_version: str | None) -> Display:
    """The size to advertise to the model for a display (the display itself if it fits).

    Anthropic beta tools: a display of WXGA (1280x800) or smaller is sent as
    is; a larger one goes to the largest of XGA / WXGA / FWXGA whose aspect
    ratio matches within 0.02 and that is smaller than the display, else it is
    scaled (keeping its aspect) into 1568 px long edge and ~1.15 MP. Other
    tools: scaled, keeping aspect, into their `ImageLimits` only when needed.
    """
    limits = limits_for(provider, tool_version)
    if provider == "anthropic" and tool_version != ANTHROPIC_GA_TOOLSET:
        if display.width <= WXGA.width and display.height <= WXGA.height:
            return display
        ratio = display.width / display.height
        candidates = [
            target
            for target in ANTHROPIC_TARGETS
            if abs(target.width / target.height - ratio) < ASPECT_TOLERANCE
            and target.width <= display.width
            and target.height <= display.height
            and target != display
        ]
        if candidates:
            return max(candidates, key=lambda target: target.width * target.height)
    return fit_within(display, limits)


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, without decoding the image."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def resize_png(image: ShotImage, size: Display) -> ShotImage:
    """The image resized to `size` and encoded as PNG (returned unchanged if already that size).

    CPU-bound (tens of ms for a full screenshot): call it through
    `asyncio.to_thread` from async code.
    """
    if (image.width, image.height) == (size.width, size.height) and image.media_type == "image/png":
        return image
    with Image.open(io.BytesIO(image.data)) as source:
        source.load()
        converted = source if source.mode in ("RGB", "RGBA") else source.convert("RGB")
        # reducing_gap lets Pillow shrink by an integer factor first: far faster, same look.
        resized = converted.resize(
            (size.width, size.height), Image.Resampling.LANCZOS, reducing_gap=3.0
        )
    out = io.BytesIO()
    # Level 1 is several times faster than the default 6 for a screenshot, at a modest size cost.
    resized.save(out, format="PNG", compress_level=1)
    return ShotImage(out.getvalue(), "image/png", size.width, size.height)
