"""KernelComputer's lifecycle through the real `kernel` SDK against the FakeKernel:
close deletes the browser, re-attach by session id (as after a restart),
detach, a browser that vanished, retries and errors, the factory."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

import pytest
from kernel import AsyncKernel

from app.computers import build_computer
from app.computers.base import Click, ComputerError, Display, Type
from app.computers.kernel import KernelComputer
from app.computers.kernel_api import kernel_client, wheel_units
from tests.computers.kernel_support import DISPLAY, client_for, settings_for
from tests.fakes.kernel_server import FakeKernel


async def started(client: AsyncKernel, session_id: str | None = None) -> KernelComputer:
    computer = KernelComputer(client, DISPLAY, session_id=session_id)
    await computer.start()
    return computer


async def eventually(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_close_deletes_the_browser(client: AsyncKernel, kernel_fake: FakeKernel) -> None:
    computer = await started(client)
    sid = computer.session_ref()
    assert sid is not None
    await computer.close()
    assert kernel_fake.browser(sid).deleted and not computer.is_alive()
    assert [(c.method, c.path) for c in kernel_fake.calls][-1] == ("DELETE", f"/browsers/{sid}")
    await computer.close()  # once is enough
    assert [c.op for c in kernel_fake.calls].count("delete") == 1
    with pytest.raises(ComputerError, match="closed"):
        await computer.execute(Click(x=1, y=1))


async def test_reattach_by_session_id_after_a_restart(kernel_fake: FakeKernel) -> None:
    first_client = client_for(kernel_fake)
    first = await started(first_client)
    sid = first.session_ref()
    assert sid is not None
    first.detach()  # the old process lets go without deleting it...
    await first_client.close()
    assert not kernel_fake.browser(sid).deleted

    # ...and a new process, with a client that has never seen the browser, re-attaches.
    client = client_for(kernel_fake)
    again = await started(client, session_id=sid)
    assert again.reattached and again.session_ref() == sid and again.is_alive()
    await again.execute(Click(x=7, y=8))
    ops = [c.op for c in kernel_fake.calls]
    assert ops == ["create", "retrieve", "click_mouse"]
    assert kernel_fake.calls[-1].session_id == sid
    assert kernel_fake.calls[-1].route == "vm"  # the retrieve taught the SDK the direct route
    await again.close()
    assert kernel_fake.browser(sid).deleted
    await client.close()


async def test_reattach_to_a_browser_that_is_gone_creates_a_new_one(
    client: AsyncKernel, kernel_fake: FakeKernel
) -> None:
    old = await started(client)
    await old.close()
    computer = await started(client, session_id=old.session_ref())
    assert not computer.reattached and computer.is_alive()
    assert computer.session_ref() not in (None, old.session_ref())
    assert [c.op for c in kernel_fake.calls] == ["create", "delete", "retrieve", "create"]
    await computer.close()


async def test_a_browser_that_vanished_is_reported_and_no_longer_alive(
    client: AsyncKernel, kernel_fake: FakeKernel
) -> None:
    computer = await started(client)
    sid = computer.session_ref()
    assert sid is not None
    await client.browsers.delete_by_id(sid)  # Kernel ended it (inactivity timeout, dashboard)
    with pytest.raises(ComputerError, match=f"Kernel browser {sid} no longer exists"):
        await computer.execute(Click(x=1, y=1))
    assert not computer.is_alive()
    with pytest.raises(ComputerError, match="no longer exists"):
        await computer.screenshot()
    await computer.close()  # nothing left to delete
    assert [c.op for c in kernel_fake.calls].count("delete") == 1


async def test_input_actions_are_never_retried(
    client: AsyncKernel, kernel_fake: FakeKernel
) -> None:
    computer = await started(client)
    kernel_fake.fail_next(500, op="click_mouse", message="xdotool failed")
    with pytest.raises(ComputerError, match=r"Kernel could not click: HTTP 500: xdotool failed"):
        await computer.execute(Click(x=1, y=1))
    assert kernel_fake.computer_calls() == [("click_mouse", kernel_fake.calls[-1].body)]
    assert computer.is_alive()  # a failed action is not a dead browser
    await computer.close()


async def test_reads_are_retried(client: AsyncKernel, kernel_fake: FakeKernel) -> None:
    computer = await started(client)
    kernel_fake.fail_next(503, op="screenshot")
    shot = await computer.screenshot()
    assert (shot.width, shot.height) == (1280, 800)
    assert [op for op, _ in kernel_fake.computer_calls()] == ["screenshot", "screenshot"]
    await computer.close()


async def test_a_refused_action_carries_kernels_message(
    client: AsyncKernel, kernel_fake: FakeKernel
) -> None:
    computer = await started(client)
    kernel_fake.fail_next(400, op="type", message="text too long")
    with pytest.raises(ComputerError, match=r"Kernel could not type: HTTP 400: text too long"):
        await computer.execute(Type(text="x"))
    await computer.close()


async def test_a_wrong_api_key_is_named(kernel_fake: FakeKernel) -> None:
    client = client_for(kernel_fake, kernel_api_key="wrong")
    with pytest.raises(ComputerError, match=r"Kernel rejected KERNEL_API_KEY \(HTTP 401\)"):
        await started(client)
    assert kernel_fake.browsers == []
    await client.close()


async def test_an_unreachable_kernel_is_named() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"  # nobody listens here
    client = AsyncKernel(api_key="k", base_url=url, max_retries=0)
    with pytest.raises(ComputerError, match=f"Could not reach Kernel at {url}"):
        await started(client)
    await client.close()


async def test_a_cancelled_start_deletes_the_browser_kernel_made_anyway(
    client: AsyncKernel, kernel_fake: FakeKernel
) -> None:
    kernel_fake.create_delay = 0.3  # the browser exists, the answer is late
    computer = KernelComputer(client, DISPLAY)
    starting = asyncio.create_task(computer.start())
    await eventually(lambda: len(kernel_fake.browsers) == 1)
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    browser = kernel_fake.browsers[0]
    await eventually(lambda: kernel_fake.browser(browser.session_id).deleted)
    assert not computer.is_alive()


def test_wheel_units_are_whole_notches_and_never_swallow_a_scroll() -> None:
    assert [wheel_units(n) for n in (0, 0.2, -0.2, 0.5, 1.49, -2.5, 3)] == [0, 1, -1, 1, 1, -3, 3]


async def test_the_factory_builds_a_kernel_computer(kernel_fake: FakeKernel) -> None:
    settings = settings_for(kernel_fake, kernel_browser_timeout_s=120)
    client = kernel_client(settings)
    assert client is not None and str(client.base_url).startswith(kernel_fake.base_url)
    spec = {"type": "kernel", "start_url": "https://x.test/", "kernel_session_id": "abc"}
    computer = build_computer(
        spec | {"display": {"width": 800, "height": 600}}, settings, None, client
    )
    assert isinstance(computer, KernelComputer)
    assert computer.display == Display(800, 600) and computer.start_url == "https://x.test/"
    assert computer.session_ref() == "abc" and computer.timeout_s == 120
    await client.close()


def test_the_factory_needs_a_kernel_api_key(kernel_fake: FakeKernel) -> None:
    no_key = settings_for(kernel_fake, kernel_api_key=None)
    assert kernel_client(no_key) is None
    with pytest.raises(ComputerError, match="KERNEL_API_KEY"):
        build_computer({"type": "kernel"}, no_key, None, None)
    with pytest.raises(ComputerError, match="Kernel client"):
        build_computer({"type": "kernel"}, settings_for(kernel_fake), None, None)


async def test_a_failed_reattach_lookup_never_deletes_the_live_browser(
    client: AsyncKernel, kernel_fake: FakeKernel
) -> None:
    live = await started(client)
    sid = live.session_ref()
    assert sid is not None
    live.detach()
    # The look-up fails (Kernel briefly unavailable; the SDK's retries spent too).
    for _ in range(3):
        kernel_fake.fail_next(500, op="retrieve")
    computer = KernelComputer(client, DISPLAY, session_id=sid)
    with pytest.raises(ComputerError):
        await computer.start()
    await computer.close()  # what acquire's clean-up does after a failed start
    assert not kernel_fake.browser(sid).deleted
    assert "delete" not in [c.op for c in kernel_fake.calls]
