"""The fake Kernel server, exercised through the real `kernel` SDK: it must refuse what
Kernel refuses, so that the KernelComputer tests mean something."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import kernel
import pytest
from kernel import AsyncKernel

from app.computers.scaling import png_size
from tests.fakes.kernel_server import FakeKernel


@pytest.fixture(scope="module")
def server() -> Iterator[FakeKernel]:
    with FakeKernel() as fake:
        yield fake


@pytest.fixture
async def client(server: FakeKernel) -> AsyncIterator[AsyncKernel]:
    server.reset()
    client = AsyncKernel(api_key=server.api_key, base_url=server.base_url, max_retries=0)
    yield client
    await client.close()


async def new_browser(client: AsyncKernel) -> str:
    browser = await client.browsers.create(viewport={"width": 800, "height": 600})
    return browser.session_id


async def test_create_retrieve_delete(client: AsyncKernel, server: FakeKernel) -> None:
    browser = await client.browsers.create(headless=True, timeout_seconds=60)
    assert browser.headless and browser.viewport is not None
    assert (browser.viewport.width, browser.viewport.height) == (1920, 1080)  # Kernel's default
    assert browser.base_url and "jwt=" in browser.cdp_ws_url
    got = await client.browsers.retrieve(browser.session_id)
    assert got.session_id == browser.session_id
    await client.browsers.delete_by_id(browser.session_id)
    assert server.browser(browser.session_id).deleted
    for call in (
        client.browsers.retrieve(browser.session_id),
        client.browsers.delete_by_id(browser.session_id),
        client.browsers.computer.get_mouse_position(browser.session_id),
    ):
        with pytest.raises(kernel.NotFoundError):
            await call
    with pytest.raises(kernel.NotFoundError):
        await client.browsers.retrieve("no-such-browser")


async def test_reset_puts_back_the_settings_a_test_changed(
    client: AsyncKernel, server: FakeKernel
) -> None:
    # The server is shared by the module: what one test sets must not leak into the next.
    server.api_key, server.direct_vm, server.create_delay = "another-key", False, 30.0
    with pytest.raises(kernel.AuthenticationError):
        await new_browser(client)
    server.reset()
    assert (server.api_key, server.direct_vm, server.create_delay) == ("test-kernel-key", True, 0)
    browser = await client.browsers.create()  # the client's key again, and no 30 s wait
    assert browser.base_url and server.calls[-1].op == "create"


@pytest.mark.parametrize(
    ("op", "params", "message"),
    [
        ("drag_mouse", {"path": [[1, 2]]}, "at least two points"),
        ("drag_mouse", {"path": [[1, 2], [3]]}, r"path\[1\] must be \[x,y\]"),
        ("drag_mouse", {"path": [[1, 2], [3, 4]], "button": "back"}, "button"),
        ("scroll", {"x": 1, "y": 1, "delta_y": 1.5}, "delta_y must be an integer"),
        ("scroll", {"x": 1, "y": 1, "delta_y": 0}, "at least one of delta_x or delta_y"),
        ("scroll", {"x": 800, "y": 1, "delta_y": 1}, "exceed screen bounds"),
        ("click_mouse", {"x": 1.0, "y": 1}, "integers"),
        ("click_mouse", {"x": 1, "y": -1}, "non-negative"),
        ("click_mouse", {"x": 1, "y": 1, "hold_keys": ["Control_Lock"]}, "No such key"),
        ("press_key", {"keys": []}, "at least one key"),
        ("press_key", {"keys": ["Enter"]}, "No such key name 'Enter'"),
        ("press_key", {"keys": ["ArrowUp"]}, "No such key name 'ArrowUp'"),
        ("press_key", {"keys": ["Backspace"]}, "No such key name 'Backspace'"),
        ("press_key", {"keys": ["Ctrl+PageDown"]}, "No such key name 'PageDown'"),
        ("press_key", {"keys": ["Ctrl++"]}, "malformed"),
        ("press_key", {"keys": ["a"], "duration": 0.5}, "duration must be an integer"),
        ("move_mouse", {"x": 1, "y": 1, "extra_body_field": True}, "unknown field"),
    ],
)
async def test_refuses_what_kernel_refuses(
    client: AsyncKernel, op: str, params: dict[str, Any], message: str
) -> None:
    sid = await new_browser(client)
    method = getattr(client.browsers.computer, op)
    known = {k: v for k, v in params.items() if k != "extra_body_field"}
    extra = {k: v for k, v in params.items() if k == "extra_body_field"}
    with pytest.raises(kernel.BadRequestError, match=message):
        await method(sid, **known, extra_body=extra or None)


@pytest.mark.parametrize(
    "keys",
    [["Return"], ["Ctrl+Shift+t"], ["Ctrl+minus"], ["Ctrl+-"], ["U00E9"], ["super+Left"], ["F12"]],
)
async def test_accepts_xdotool_keys(
    client: AsyncKernel, server: FakeKernel, keys: list[str]
) -> None:
    sid = await new_browser(client)
    await client.browsers.computer.press_key(sid, keys=keys)
    assert server.computer_calls(sid) == [("press_key", {"keys": keys})]


async def test_screenshots_are_pngs_of_the_screen_or_region(client: AsyncKernel) -> None:
    sid = await new_browser(client)
    full = await (await client.browsers.computer.capture_screenshot(sid)).read()
    assert png_size(full) == (800, 600)
    region = {"x": 700, "y": 500, "width": 100, "height": 100}
    part = await client.browsers.computer.capture_screenshot(sid, region=region)  # type: ignore[arg-type]
    assert png_size(await part.read()) == (100, 100)
    with pytest.raises(kernel.BadRequestError, match="region exceeds"):
        await client.browsers.computer.capture_screenshot(
            sid,
            region={"x": 701, "y": 500, "width": 100, "height": 100},  # type: ignore[arg-type]
        )


async def test_authentication(client: AsyncKernel, server: FakeKernel) -> None:
    sid = await new_browser(client)
    wrong = AsyncKernel(api_key="wrong", base_url=server.base_url, max_retries=0)
    with pytest.raises(kernel.AuthenticationError):
        await wrong.browsers.retrieve(sid)
    await wrong.close()
    async with httpx.AsyncClient(base_url=server.base_url) as raw:
        direct = await raw.post(f"/vm/{sid}/computer/get_mouse_position", params={"jwt": "nope"})
        assert direct.status_code == 401 and direct.json()["code"] == "unauthorized"
        unknown = await raw.get("/browsers", headers={"authorization": f"Bearer {server.api_key}"})
        assert unknown.status_code == 404
