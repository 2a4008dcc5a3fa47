"""SessionComputers and ResilientComputer on fake computers: idle release (never under a
run, never racing an acquire) and a crashed backend replaced at the last page mid-run."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from app.agents.computers import ResilientComputer, SessionComputers
from app.computers.base import Click, ComputerError, CursorPosition, Display, Screenshot, Wait
from app.computers.fake import FakeComputer

SPEC: dict[str, Any] = {"type": "browser", "start_url": "https://start.test/"}


class Factory:
    """Builds fake computers the way build_computer builds browsers, and keeps them."""

    def __init__(self, start_delay_s: float = 0.0) -> None:
        self.built: list[FakeComputer] = []
        self.start_delay_s = start_delay_s

    def __call__(self, spec: dict[str, Any]) -> FakeComputer:
        computer = FakeComputer(Display(800, 600), start_url=spec.get("start_url"))
        delay = self.start_delay_s
        if delay:
            started = computer.start

            async def slow_start() -> None:
                await asyncio.sleep(delay)
                await started()

            computer.start = slow_start  # type: ignore[method-assign]
        self.built.append(computer)
        return computer


def crash(computer: ResilientComputer) -> FakeComputer:
    """Make the backend dead the way a crashed Chromium is: not alive, every call fails."""
    backend = computer.backend
    assert isinstance(backend, FakeComputer)
    backend.closed = True
    return backend


# ------------------------------------------------------------------ idle release


async def test_an_idle_computer_is_released_then_re_created_at_the_last_page() -> None:
    factory = Factory()
    computers = SessionComputers(factory, idle_ttl_s=0.2)
    computers.run_started("s1")
    first = await computers.acquire("s1", SPEC, None)
    computers.run_ended("s1")
    assert await computers.release_idle() == []  # not idle long enough yet
    await asyncio.sleep(0.25)
    assert await computers.release_idle() == ["s1"]
    assert computers.get("s1") is None and not first.is_alive()

    again = await computers.acquire("s1", SPEC, "https://start.test/last")
    assert again is not first and again.is_alive()
    assert await again.current_url() == "https://start.test/last"
    await computers.close_all()


async def test_a_session_with_a_run_in_progress_is_never_idle() -> None:
    computers = SessionComputers(Factory(), idle_ttl_s=0.05)
    computers.run_started("s1")
    computer = await computers.acquire("s1", SPEC, None)
    # A second run begins before the first has wound down (a cancel then a new run).
    computers.run_started("s1")
    computers.run_ended("s1")
    await asyncio.sleep(0.1)
    assert await computers.release_idle() == []
    computers.run_ended("s1")
    await asyncio.sleep(0.1)
    assert await computers.release_idle() == ["s1"]
    assert not computer.is_alive()


async def test_the_reaper_does_not_close_a_computer_a_run_is_acquiring() -> None:
    factory = Factory()
    computers = SessionComputers(factory, idle_ttl_s=0.05)
    computers.run_started("s1")
    await computers.acquire("s1", SPEC, None)
    computers.run_ended("s1")
    await asyncio.sleep(0.1)
    # The reaper has taken the session's lock and is closing the computer when a run
    # starts: that run waits for the lock, then gets a new computer, never the closed one.
    closing = factory.built[0]
    close = closing.close
    released = asyncio.Event()

    async def slow_close() -> None:
        await asyncio.sleep(0.05)
        await close()
        released.set()

    closing.close = slow_close  # type: ignore[method-assign]
    reaping = asyncio.create_task(computers.release_idle())
    await asyncio.sleep(0.01)
    computers.run_started("s1")
    computer = await computers.acquire("s1", SPEC, "https://start.test/b")
    assert released.is_set() and computer.is_alive() and len(factory.built) == 2
    assert await reaping == ["s1"]
    assert await computers.release_idle() == []  # the run is in progress
    await computer.execute(Click(x=1, y=1))
    await computers.close_all()


async def test_the_reaper_runs_in_the_background_until_stopped() -> None:
    computers = SessionComputers(Factory(), idle_ttl_s=0.1)
    computers.start()
    computers.run_started("s1")
    await computers.acquire("s1", SPEC, None)
    computers.run_ended("s1")
    for _ in range(50):
        if computers.get("s1") is None:
            break
        await asyncio.sleep(0.02)
    assert computers.get("s1") is None
    await computers.stop()
    await computers.stop()  # idempotent


async def test_a_ttl_of_zero_keeps_computers() -> None:
    computers = SessionComputers(Factory(), idle_ttl_s=0)
    computers.start()
    await computers.acquire("s1", SPEC, None)
    await asyncio.sleep(0.05)
    assert computers.get("s1") is not None
    await computers.stop()
    await computers.close_all()


# ------------------------------------------------------------------ a crash mid-run


async def test_an_action_on_a_crashed_browser_is_refused_and_the_browser_restarted() -> None:
    factory = Factory()
    computer = ResilientComputer(factory, SPEC, "https://start.test/a")
    await computer.start()
    await computer.execute(Click(x=5, y=5))
    backend = computer.backend
    assert isinstance(backend, FakeComputer)
    backend.url = "https://start.test/b"  # the click navigated
    await computer.screenshot()
    assert await computer.current_url() == "https://start.test/b"

    dead = crash(computer)
    with pytest.raises(ComputerError) as error:
        await computer.execute(Click(x=7, y=7))
    assert str(error.value) == (
        "The browser crashed and was restarted at https://start.test/b; "
        "this action was not run. Look at the screen again."
    )
    fresh = computer.backend
    assert isinstance(fresh, FakeComputer) and fresh is not dead and computer.is_alive()
    assert fresh.started and fresh.start_url == "https://start.test/b"
    assert dead.actions == [Click(x=5, y=5)] and fresh.actions == []  # not run on either
    # The screenshot after the error comes from the new browser; then all goes on.
    await computer.screenshot()
    assert fresh.screenshots_taken == 1
    assert (await computer.execute(Click(x=7, y=7))).output is None
    assert fresh.actions == [Click(x=7, y=7)]


async def test_a_crash_during_an_action_fails_it() -> None:
    factory = Factory()
    computer = ResilientComputer(factory, SPEC, None)
    await computer.start()
    backend = computer.backend
    assert isinstance(backend, FakeComputer)
    execute = backend.execute

    async def crashing(action: Any) -> Any:
        backend.closed = True  # the browser dies while the action runs
        return await execute(action)

    backend.execute = crashing  # type: ignore[method-assign]
    with pytest.raises(
        ComputerError, match=re.escape("at https://start.test/; the last action may not")
    ):
        await computer.execute(Click(x=1, y=1))
    assert computer.backend is not backend and computer.is_alive()


async def test_a_crash_during_a_wait_fails_it_too() -> None:
    computer = ResilientComputer(Factory(), SPEC, None)
    await computer.start()
    backend = computer.backend
    assert isinstance(backend, FakeComputer)
    waiting = asyncio.create_task(computer.execute(Wait(seconds=0.1)))
    await asyncio.sleep(0.02)
    backend.closed = True
    with pytest.raises(ComputerError, match="the last action may not have run"):
        await waiting
    assert computer.is_alive()


async def test_a_crash_found_by_a_screenshot_is_told_with_the_next_action() -> None:
    computer = ResilientComputer(Factory(), SPEC, "https://start.test/a")
    await computer.start()
    dead = crash(computer)
    shot = await computer.screenshot()  # from the new browser
    assert shot.width == 800 and computer.backend is not dead
    result = await computer.execute(CursorPosition())
    assert result.output == (
        "X=0, Y=0\nThe browser crashed and was restarted at https://start.test/a "
        "before the last screenshot."
    )
    assert (await computer.execute(Screenshot())).output is None  # told once


async def test_a_failed_restart_is_an_error_and_the_next_call_tries_again() -> None:
    factory = Factory()
    computer = ResilientComputer(factory, SPEC, None)
    await computer.start()
    crash(computer)

    def broken(spec: dict[str, Any]) -> FakeComputer:
        raise ComputerError("Chromium not found")

    computer._factory = broken
    with pytest.raises(ComputerError, match="could not be restarted: Chromium not found"):
        await computer.execute(Click(x=1, y=1))
    computer._factory = factory
    with pytest.raises(ComputerError, match="crashed and was restarted"):
        await computer.execute(Click(x=1, y=1))
    await computer.execute(Click(x=1, y=1))


async def test_a_cancelled_restart_leaks_nothing() -> None:
    factory = Factory(start_delay_s=1.0)
    computer = ResilientComputer(Factory(), SPEC, None)
    await computer.start()
    crash(computer)
    computer._factory = factory
    restarting = asyncio.create_task(computer.execute(Click(x=1, y=1)))
    await asyncio.sleep(0.05)
    restarting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await restarting
    (half_started,) = factory.built
    assert half_started.closed


async def test_a_released_computer_is_not_brought_back() -> None:
    factory = Factory()
    computer = ResilientComputer(factory, SPEC, None)
    await computer.start()
    await computer.close()
    with pytest.raises(ComputerError, match="closed"):
        await computer.execute(Click(x=1, y=1))
    assert len(factory.built) == 1
