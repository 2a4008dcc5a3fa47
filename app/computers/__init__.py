"""Computers: what an agent sees and drives, behind one `Computer` protocol.

`build_computer` turns a session's `computer` JSON into a backend. Browser
computers share one `BrowserPool` (one Chromium per service).
"""

from __future__ import annotations

from typing import Any

from app.computers.base import Computer, ComputerError, Display
from app.computers.browser import BrowserComputer, BrowserPool
from app.computers.fake import FakeComputer
from app.settings import Settings

__all__ = [
    "BrowserPool",
    "Computer",
    "ComputerError",
    "Display",
    "build_computer",
    "display_from_spec",
]

MAX_DISPLAY_EDGE = 8000  # the providers' hard per-image limit: a larger screen cannot be shown


def display_from_spec(spec: dict[str, Any], settings: Settings) -> Display:
    """The spec's display, or the configured default size."""
    raw = spec.get("display") or {}
    width = raw.get("width", settings.default_display_width)
    height = raw.get("height", settings.default_display_height)
    for name, value in (("width", width), ("height", height)):
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or not 1 <= value <= MAX_DISPLAY_EDGE
        ):
            raise ComputerError(f"display.{name} must be an integer from 1 to {MAX_DISPLAY_EDGE}")
    return Display(width, height)


def build_computer(spec: dict[str, Any], settings: Settings, pool: BrowserPool | None) -> Computer:
    """A not-yet-started computer for a session's `computer` spec; the caller awaits start()."""
    kind = spec.get("type", "browser")
    display = display_from_spec(spec, settings)
    start_url = spec.get("start_url")
    if kind == "browser":
        if pool is None:
            raise ComputerError("browser computers need a BrowserPool")
        blocked = spec.get("blocked_domains") or ()
        return BrowserComputer(pool, display, start_url=start_url, blocked_domains=blocked)
    if kind == "fake":
        if not settings.enable_fake_computer:
            raise ComputerError("The fake computer is disabled (set ENABLE_FAKE_COMPUTER=true)")
        return FakeComputer(display, start_url=start_url)
    if kind in ("cdp", "kernel"):
        raise ComputerError(f"The {kind} computer is not supported yet")
    raise ComputerError(f"Unknown computer type {kind!r}")
