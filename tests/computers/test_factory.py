"""build_computer: a session's `computer` JSON -> an unstarted backend."""

from __future__ import annotations

from typing import Any

import pytest

from app.computers import build_computer
from app.computers.base import ComputerError, Display
from app.computers.browser import BrowserComputer, BrowserPool
from app.computers.cdp import CdpComputer
from app.computers.fake import FakeComputer
from app.settings import Settings


def settings(**overrides: Any) -> Settings:
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]


def test_fake_when_enabled() -> None:
    spec = {"type": "fake", "start_url": "http://x.test/", "display": {"width": 640, "height": 480}}
    computer = build_computer(spec, settings(enable_fake_computer=True), None)
    assert isinstance(computer, FakeComputer)
    assert computer.display == Display(640, 480) and computer.start_url == "http://x.test/"


def test_fake_refused_when_disabled() -> None:
    with pytest.raises(ComputerError, match="ENABLE_FAKE_COMPUTER"):
        build_computer({"type": "fake"}, settings(enable_fake_computer=False), None)


def test_browser_uses_the_pool_and_default_display() -> None:
    pool = BrowserPool("/usr/bin/chromium")  # not started: nothing launches until start()
    config = settings(default_display_width=1024, default_display_height=768)
    computer = build_computer({"type": "browser", "start_url": None}, config, pool)
    assert isinstance(computer, BrowserComputer)
    assert computer.display == Display(1024, 768)
    assert pool.contexts == []
    with pytest.raises(ComputerError, match="BrowserPool"):
        build_computer({"type": "browser"}, config, None)


def test_cdp_attaches_through_the_pool_driver() -> None:
    pool = BrowserPool("/nonexistent/chromium")  # a cdp computer never launches Chromium
    spec = {"type": "cdp", "cdp_url": "ws://127.0.0.1:9222/devtools/browser/x", "start_url": None}
    computer = build_computer(spec, settings(), pool)
    assert isinstance(computer, CdpComputer)
    assert computer.cdp_url == spec["cdp_url"] and computer.display == Display(1280, 800)
    with pytest.raises(ComputerError, match="BrowserPool"):
        build_computer(spec, settings(), None)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "cdp"}, "cdp_url is required for a cdp computer"),
        ({"type": "cdp", "cdp_url": ""}, "cdp_url is required"),
        ({"type": "kernel"}, "needs a Kernel API key \\(set KERNEL_API_KEY\\)"),
        ({"type": "vnc"}, "Unknown computer type 'vnc'"),
        ({"type": "fake", "display": {"width": 0, "height": 10}}, "display.width"),
        ({"type": "fake", "display": {"width": 10, "height": "tall"}}, "display.height"),
        ({"type": "fake", "display": {"width": 9000, "height": 10}}, "display.width"),
    ],
)
def test_rejected_specs(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ComputerError, match=message):
        build_computer(spec, settings(enable_fake_computer=True), BrowserPool(None))


async def test_missing_chromium_is_a_computer_error() -> None:
    computer = build_computer({"type": "browser"}, settings(), BrowserPool("/nonexistent/chromium"))
    with pytest.raises(ComputerError, match="Chromium not found"):
        await computer.start()
