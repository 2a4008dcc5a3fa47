"""Conformance: each provider's wire actions, translated and executed on each backend,
produce exactly the DOM events a person's mouse and keyboard would, where the model
pointed (within 1 px after scaling), at every display size.

No HTTP and no database: the translation functions and the backends are driven
directly. One browser per backend serves the whole suite: the session's
BrowserPool for `browser` (a fresh context per case), and one separately started
Chromium for `cdp`, reset to a single blank tab per case (a cdp computer works in
the remote's own default context). Each case runs its whole script on the probe
page, reading the probe's record after every action so a failure names the action.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
from playwright.async_api import Page

from app.agents import anthropic_tools, openai_tools
from app.computers.base import (
    Action,
    Computer,
    ComputerError,
    Display,
    action_to_json,
)
from app.computers.browser import BrowserComputer, BrowserPool
from app.computers.cdp import CdpComputer
from app.computers.scaling import ScaleMap
from tests.computers.conformance import DISPLAYS, Space
from tests.computers.documented_keys import ANTHROPIC_KEYS, OPENAI_KEYS, DocumentedKey
from tests.computers.probe_events import DRAIN_JS, Recorded, key_events, sequence_problems
from tests.computers.wire_scripts import WIRES, Wire
from tests.remote_chromium import RemoteChromium, remote_chromium

pytestmark = pytest.mark.browser

Opener = Callable[[Display], AbstractAsyncContextManager[Computer]]

# Every backend the suite drives: the service's own Chromium (a context per case) and a
# Chromium someone else runs, attached over CDP (reset to one blank tab per case).
BACKENDS = ("browser", "cdp")


def probe_page(computer: Computer) -> Page:
    """The Playwright page the computer drives, to read the probe's record from."""
    page = getattr(computer, "page", None)
    assert isinstance(page, Page), f"{type(computer).__name__} exposes no Playwright `page`"
    return page


async def drain(page: Page, scroll: tuple[float, float]) -> tuple[Recorded, tuple[float, float]]:
    """The events since the last drain, and how far the page scrolled meanwhile."""
    got: dict[str, Any] = await page.evaluate(DRAIN_JS)
    now = (got["scroll"][0], got["scroll"][1])
    return Recorded(got["events"], (now[0] - scroll[0], now[1] - scroll[1])), now


@pytest.fixture(scope="module")
def remote(chromium_path: str) -> Iterator[RemoteChromium]:
    """The cdp backend's browser: one for the module, started only if a cdp case runs."""
    with remote_chromium(chromium_path) as chromium:
        yield chromium


@pytest.fixture(params=BACKENDS)
def open_computer(
    request: pytest.FixtureRequest, browser_pool: BrowserPool, probe_server: str
) -> Opener:
    """Opens a started computer of the backend on the probe page (hover moves recorded)."""
    url = f"{probe_server}/probe.html?moves=all"
    backend: str = request.param
    remote: RemoteChromium | None = request.getfixturevalue("remote") if backend == "cdp" else None

    @asynccontextmanager
    async def opened(display: Display) -> AsyncIterator[Computer]:
        computer: BrowserComputer
        if remote is None:
            computer = BrowserComputer(browser_pool, display, start_url=url)
        else:
            remote.reset()  # as a provider hands out a fresh browser: one blank tab
            computer = CdpComputer(browser_pool, remote.ws_url, display, start_url=url)
        await computer.start()
        try:
            yield computer
        finally:
            await computer.close()

    return opened


@pytest.mark.parametrize("display", DISPLAYS, ids=lambda d: f"{d.width}x{d.height}")
@pytest.mark.parametrize("wire", WIRES, ids=lambda w: w.id)
async def test_every_action_lands_where_the_model_pointed(
    open_computer: Opener, wire: Wire, display: Display
) -> None:
    space = wire.space(display)
    steps = wire.script(space)
    actions = wire.translate([step.wire for step in steps], space.scale)
    assert len(actions) == len(steps)
    problems: list[str] = []
    async with open_computer(display) as computer:
        page = probe_page(computer)
        _, scroll = await drain(page, (0, 0))  # whatever loading the page recorded
        for step, action in zip(steps, actions, strict=True):
            found: list[str] = []
            try:
                result = await computer.execute(action)
            except ComputerError as exc:  # reported with the others: the script goes on
                found.append(f"the computer refused it: {exc}")
            recorded, scroll = await drain(page, scroll)
            if not found:
                found += step.problems(recorded)
                if step.after is not None:
                    found += await step.after(computer, result)
            problems += [
                f"{step.label}\n    -> {action_to_json(action)}\n    {problem}" for problem in found
            ]
    model = space.scale.model
    assert not problems, (
        f"{wire.id} on a {display.width}x{display.height} screen "
        f"(model sees {model.width}x{model.height}):\n" + "\n".join(problems)
    )


def _chords() -> dict[tuple[str, ...], list[DocumentedKey]]:
    """Each distinct chord the documented keys come to, with the spellings that give it
    (test_keys.py checks each spelling's translation; this checks each chord's effect)."""
    chords: dict[tuple[str, ...], list[DocumentedKey]] = {}
    for entry in (*ANTHROPIC_KEYS, *OPENAI_KEYS):
        chords.setdefault(entry.keys, []).append(entry)
    return chords


def _key_action(entry: DocumentedKey, scale: ScaleMap) -> Action:
    if isinstance(entry.wire, str):  # Anthropic's xdotool-style text
        return anthropic_tools.to_action("key", {"text": entry.wire}, scale)
    return openai_tools.to_action({"type": "keypress", "keys": list(entry.wire)}, scale)


async def test_documented_keys_reach_the_page_as_their_dom_keys(open_computer: Opener) -> None:
    display = Display(1280, 800)
    scale = ScaleMap.identity(display)
    problems: list[str] = []
    async with open_computer(display) as computer:
        page = probe_page(computer)
        _, scroll = await drain(page, (0, 0))
        for chord, spellings in _chords().items():
            await computer.execute(_key_action(spellings[0], scale))
            recorded, scroll = await drain(page, scroll)
            keys = [e for e in recorded.without_moves() if e["type"] in ("keydown", "keyup")]
            problems += [
                f"{list(chord)} (from {', '.join(repr(e.id) for e in spellings)}): {problem}"
                for problem in sequence_problems(key_events(chord), keys)
            ]
    assert not problems, "\n".join(problems)


async def test_back_and_forward_buttons_move_through_history(
    open_computer: Opener, probe_server: str
) -> None:
    display = Display(1280, 800)
    space = Space(ScaleMap.identity(display))
    async with open_computer(display) as computer:
        box = await probe_page(computer).evaluate(
            "() => { const r = document.getElementById('next').getBoundingClientRect();"
            " return [Math.round(r.x + r.width / 2), Math.round(r.y + r.height / 2)]; }"
        )
        link = space.aim((box[0], box[1]))
        first, second = await computer.current_url(), f"{probe_server}/probe.html?page=2"
        for button, url in (("left", second), ("back", first), ("forward", second)):
            raw = {"type": "click", "button": button, "x": link[0], "y": link[1]}
            await computer.execute(openai_tools.to_action(raw, space.scale))
            assert await computer.current_url() == url, f"after a {button} click"
