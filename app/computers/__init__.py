"""Computers: what an agent sees and drives, behind one `Computer` protocol.

`build_computer` turns a session's `computer` JSON into a backend. Browser
computers share one `BrowserPool` (one Chromium per service); cdp computers
attach to a remote Chromium through its Playwright driver.
"""

from __future__ import annotations

from typing import Any

from kernel import AsyncKernel

from app.computers.base import Computer, ComputerError, Display
from app.computers.browser import BrowserComputer, BrowserPool
from app.computers.cdp import CdpComputer
from app.computers.fake import FakeComputer
from app.computers.kernel import KernelComputer
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


def build_computer(
    spec: dict[str, Any],
    settings: Settings,
    pool: BrowserPool | None,
    kernel: AsyncKernel | None = None,
) -> Computer:
    """A not-yet-started computer for a session's `computer` spec; the caller awaits start().

    `kernel` is the service's Kernel client (None without KERNEL_API_KEY). A kernel
    spec may carry `kernel_session_id`, the browser to re-attach to.
    """
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
    if kind == "kernel":
        if kernel is None:
            if not settings.kernel_api_key:
                raise ComputerError(
                    "The kernel computer needs a Kernel API key (set KERNEL_API_KEY)"
                )
            raise ComputerError("kernel computers need the service's Kernel client")
        return KernelComputer(
            kernel,
            display,
            start_url=start_url,
            session_id=spec.get("kernel_session_id"),
            timeout_s=settings.kernel_browser_timeout_s,
        )
    if kind == "cdp":
        cdp_url = spec.get("cdp_url")
        if not isinstance(cdp_url, str) or not cdp_url:
            raise ComputerError("cdp_url is required for a cdp computer (its DevTools URL)")
        if pool is None:
            raise ComputerError("cdp computers need a BrowserPool (its Playwright driver)")
        blocked = spec.get("blocked_domains") or ()
        return CdpComputer(pool, cdp_url, display, start_url=start_url, blocked_domains=blocked)
    raise ComputerError(f"Unknown computer type {kind!r}")
