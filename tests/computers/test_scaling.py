"""Scaling between the screen and the model's image space, and PNG resizing."""

from __future__ import annotations

import io
import itertools

import pytest
from PIL import Image

from app.computers.base import Display, ShotImage
from app.computers.scaling import (
    ANTHROPIC_BETA_LIMITS,
    ScaleMap,
    choose_scaled_size,
    fit_within,
    limits_for,
    png_size,
    resize_png,
)

BETA = "computer_20251124"
GA = "computer_toolset_20260801"


@pytest.mark.parametrize(
    ("display", "expected"),
    [
        ((1280, 800), (1280, 800)),  # WXGA or smaller: as is
        ((1024, 768), (1024, 768)),
        ((800, 600), (800, 600)),
        ((1280, 720), (1280, 720)),
        ((1366, 768), (1366, 768)),  # no smaller target of its ratio; within limits
        ((1920, 1080), (1366, 768)),  # 16:9 -> FWXGA
        ((2560, 1440), (1366, 768)),
        ((1920, 1200), (1280, 800)),  # 16:10 -> WXGA
        ((2560, 1600), (1280, 800)),
        ((1600, 1200), (1024, 768)),  # 4:3 -> XGA
        ((2048, 1536), (1024, 768)),
        ((3440, 1440), (1568, 656)),  # no target: long edge 1568
        ((1500, 1500), (1098, 1098)),  # no target: ~1.15 MP
        ((1080, 1920), (823, 1464)),  # portrait: the pixel budget binds
    ],
)
def test_anthropic_beta_sizes(display: tuple[int, int], expected: tuple[int, int]) -> None:
    for tool in ("computer_20241022", "computer_20250124", BETA, None):
        assert choose_scaled_size(Display(*display), "anthropic", tool) == Display(*expected)


def test_fallback_sizes_respect_the_beta_limits() -> None:
    for w, h in [(3440, 1440), (1500, 1500), (1080, 1920), (5000, 1000)]:
        size = choose_scaled_size(Display(w, h), "anthropic", BETA)
        assert max(size.width, size.height) <= ANTHROPIC_BETA_LIMITS.max_long_edge
        assert size.width * size.height <= ANTHROPIC_BETA_LIMITS.max_pixels
        assert abs(size.width / size.height - w / h) < 0.01


@pytest.mark.parametrize(
    ("provider", "tool", "display", "expected"),
    [
        ("anthropic", GA, (1920, 1080), (1920, 1080)),
        ("anthropic", GA, (3840, 2160), (2576, 1449)),
        ("openai", "computer", (1280, 800), (1280, 800)),
        ("openai", None, (3840, 2160), (3840, 2160)),
        ("openai", "computer", (5120, 2880), (4266, 2400)),
        ("openai", "computer_use_preview", (1024, 768), (1024, 768)),
        ("openai", "computer_use_preview", (1280, 800), (1228, 768)),
        ("openai", "computer_use_preview", (1920, 1080), (1365, 768)),
    ],
)
def test_other_tools(
    provider: str, tool: str | None, display: tuple[int, int], expected: tuple[int, int]
) -> None:
    assert choose_scaled_size(Display(*display), provider, tool) == Display(*expected)


def test_unknown_tool_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        limits_for("anthropic", "computer_19990101")
    with pytest.raises(ValueError):
        choose_scaled_size(Display(800, 600), "gemini", None)


def test_fit_within_never_grows() -> None:
    assert fit_within(Display(640, 480), ANTHROPIC_BETA_LIMITS) == Display(640, 480)


@pytest.mark.parametrize(
    ("screen", "model"),
    [((1920, 1080), (1366, 768)), ((2560, 1600), (1280, 800)), ((1600, 1200), (1024, 768))],
)
def test_round_trips(screen: tuple[int, int], model: tuple[int, int]) -> None:
    scale = ScaleMap(Display(*screen), Display(*model))
    # Model -> screen -> model is exact for every model pixel.
    for mx, my in itertools.product(range(model[0]), range(0, model[1], 7)):
        assert scale.to_model(*scale.to_screen(mx, my)) == (mx, my)
    # Screen -> model -> screen lands within 1 px (scale factors here are <= 2).
    for sx, sy in itertools.product(range(0, screen[0], 3), range(0, screen[1], 11)):
        rx, ry = scale.to_screen(*scale.to_model(sx, sy))
        assert abs(rx - sx) <= 1 and abs(ry - sy) <= 1
    # The model's last pixel stays on the screen.
    x, y = scale.to_screen(model[0] - 1, model[1] - 1)
    assert Display(*screen).contains(x, y)


def test_scale_map_values() -> None:
    scale = ScaleMap(Display(1920, 1080), Display(1366, 768))
    assert scale.to_screen(683, 384) == (960, 540)
    assert scale.to_model(960, 540) == (683, 384)
    assert scale.region_to_screen((0, 0, 683, 384)) == (0, 0, 960, 540)
    assert not scale.is_identity
    identity = ScaleMap.identity(Display(1280, 800))
    assert identity.is_identity and identity.to_screen(5, 7) == (5, 7)


def _png(width: int, height: int) -> ShotImage:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(out, format="PNG")
    return ShotImage(out.getvalue(), "image/png", width, height)


def test_resize_png() -> None:
    source = _png(1920, 1080)
    resized = resize_png(source, Display(1366, 768))
    assert (resized.width, resized.height, resized.media_type) == (1366, 768, "image/png")
    assert png_size(resized.data) == (1366, 768)
    with Image.open(io.BytesIO(resized.data)) as image:
        assert image.size == (1366, 768)
        assert image.convert("RGB").getpixel((683, 384)) == (10, 200, 30)
    assert resize_png(resized, Display(1366, 768)) is resized  # nothing to do


def test_png_size_rejects_other_formats() -> None:
    with pytest.raises(ValueError):
        png_size(b"GIF89a" + bytes(30))
