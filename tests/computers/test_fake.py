"""FakeComputer: deterministic screenshots, recorded actions, cursor, waits, injected faults."""

from __future__ import annotations

import asyncio
import io
import time

import pytest
from PIL import Image

from app.computers.base import (
    Action,
    Click,
    Computer,
    ComputerError,
    CursorPosition,
    Display,
    Drag,
    HoldKey,
    Key,
    Move,
    Screenshot,
    Scroll,
    Type,
    Wait,
    Zoom,
)
from app.computers.fake import FakeComputer, _png_body, colour_for, solid_png


def pixel(data: bytes) -> tuple[int, int, int]:
    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB")
        return rgb.getpixel((rgb.width - 1, rgb.height - 1))  # type: ignore[return-value]


async def test_is_a_computer_and_records_actions() -> None:
    fake = FakeComputer(Display(800, 600), start_url="http://example.test/")
    assert isinstance(fake, Computer)
    await fake.start()
    actions: list[Action] = [Click(x=10, y=20), Type(text="hi"), Key(keys=["Enter"]), Screenshot()]
    for action in actions:
        assert (await fake.execute(action)).output is None
    assert fake.actions == actions
    assert await fake.current_url() == "http://example.test/"


async def test_screenshots_are_valid_and_deterministic() -> None:
    first, second = FakeComputer(Display(1280, 800)), FakeComputer(Display(1280, 800))
    shots: list[bytes] = []
    for fake in (first, second):
        before = await fake.screenshot()
        await fake.execute(Click(x=1, y=1))
        after = await fake.screenshot()
        shots += [before.data, after.data]
        assert before.data != after.data  # an action changes the picture
        assert (after.width, after.height, after.media_type) == (1280, 800, "image/png")
        with Image.open(io.BytesIO(after.data)) as image:
            assert image.size == (1280, 800)
    assert shots[:2] == shots[2:]  # same actions, same bytes
    assert pixel(shots[0]) == colour_for(0) and pixel(shots[1]) == colour_for(1)


def test_colours_of_neighbouring_counters_differ() -> None:
    assert all(colour_for(n) != colour_for(n + 1) for n in range(1000))


def test_solid_png_compresses_each_size_once() -> None:
    # What keeps a screenshot cheap: the compressed pixels of a size are computed once and
    # reused, only the one-colour palette changes. (How fast that is belongs in bench/.)
    before = _png_body.cache_info()
    shots = [solid_png(1920, 1080, colour_for(n)) for n in range(1000)]
    after = _png_body.cache_info()
    assert after.misses - before.misses <= 1 and after.hits - before.hits >= 999
    assert all(pixel(shot) == colour_for(n) for n, shot in enumerate(shots[:3]))
    with Image.open(io.BytesIO(shots[-1])) as image:
        assert image.size == (1920, 1080)


async def test_tracks_the_cursor() -> None:
    fake = FakeComputer(Display(800, 600))
    assert (await fake.execute(CursorPosition())).output == "X=0, Y=0"
    await fake.execute(Click(x=100, y=200))
    await fake.execute(Click())  # at the cursor: it stays
    assert fake.cursor == (100, 200)
    await fake.execute(Move(x=300, y=301))
    assert fake.cursor == (300, 301)
    await fake.execute(Drag(path=[(1, 2), (3, 4), (50, 60)]))
    assert fake.cursor == (50, 60)
    await fake.execute(Scroll(x=70, y=80, dy=3))
    assert (await fake.execute(CursorPosition())).output == "X=70, Y=80"


async def test_zoom_returns_the_region_size() -> None:
    fake = FakeComputer(Display(800, 600))
    result = await fake.execute(Zoom(region=(100, 50, 300, 150)))
    assert result.image is not None and (result.image.width, result.image.height) == (200, 100)
    with Image.open(io.BytesIO(result.image.data)) as image:
        assert image.size == (200, 100)


@pytest.mark.parametrize(
    "action",
    [
        Click(x=800, y=10),
        Move(x=-1, y=10),
        Drag(path=[(1, 1), (1000, 1)]),
        Zoom(region=(10, 10, 10, 20)),
        Zoom(region=(0, 0, 801, 10)),
        Key(keys=["ctrl"]),
    ],
)
async def test_invalid_actions_raise(action: Click | Move | Drag | Zoom | Key) -> None:
    with pytest.raises(ComputerError):
        await FakeComputer(Display(800, 600)).execute(action)


async def test_wait_really_waits_and_can_be_cancelled() -> None:
    fake = FakeComputer()
    started = time.monotonic()
    await fake.execute(Wait(seconds=0.1))
    await fake.execute(HoldKey(keys=["Shift"], seconds=0.1))
    assert time.monotonic() - started >= 0.2
    task = asyncio.create_task(fake.execute(Wait(seconds=30)))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake.executed == 2  # the cancelled wait did not complete


async def test_delay_and_failure_injection() -> None:
    fake = FakeComputer(delay_s=0.05, fail_on={"type"})
    started = time.monotonic()
    await fake.execute(Click(x=1, y=1))
    assert time.monotonic() - started >= 0.05
    with pytest.raises(ComputerError, match="Injected failure for type"):
        await fake.execute(Type(text="x"))
    assert [a.type for a in fake.actions] == ["click", "type"]  # received, then failed
    assert fake.executed == 1


async def test_closed_computer_refuses_work() -> None:
    fake = FakeComputer()
    await fake.close()
    with pytest.raises(ComputerError, match="closed"):
        await fake.screenshot()
    with pytest.raises(ComputerError, match="closed"):
        await fake.execute(Screenshot())
