"""A `kernel` session end to end over real HTTP: the strict fake Anthropic API drives
a Kernel browser served by the FakeKernel, through the real `kernel` SDK. What
Kernel was asked to do is read from the fake, not from the service's own events."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.api.helpers import create_session, read_stream, types, wait_for_run
from tests.conftest import Service, ServiceServer, make_settings
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    computer_call,
    text_message,
    tool_use_message,
)
from tests.fakes.kernel_server import FakeKernel

KERNEL_COMPUTER = {"type": "kernel", "display": {"width": 1280, "height": 800}}


@pytest.fixture
async def kernel_service(
    clean_db: str, anthropic_fake: FakeAnthropic, kernel_fake: FakeKernel
) -> AsyncIterator[Service]:
    settings = make_settings(
        clean_db,
        anthropic_fake.base_url,
        kernel_api_key=kernel_fake.api_key,
        kernel_base_url=kernel_fake.base_url,
    )
    async with ServiceServer(settings) as svc:
        yield svc


async def test_a_kernel_session_clicks_on_kernel_and_closing_deletes_the_browser(
    kernel_service: Service, anthropic_fake: FakeAnthropic, kernel_fake: FakeKernel
) -> None:
    anthropic_fake.strict = True
    anthropic_fake.enqueue(
        tool_use_message(computer_call("left_click", coordinate=[100, 200])),
        tool_use_message(computer_call("key", text="ctrl+shift+t")),
        tool_use_message(
            computer_call("scroll", coordinate=[640, 400], scroll_direction="down", scroll_amount=3)
        ),
        text_message("Done."),
    )
    client = kernel_service.client
    session = await create_session(client, task="Open a tab", computer=KERNEL_COMPUTER)
    sid, rid = session["id"], session["active_run_id"]
    run = await wait_for_run(client, sid, rid)
    assert run["status"] == "completed", run
    assert anthropic_fake.script_errors == []

    (browser,) = kernel_fake.browsers
    assert browser.created_with == {
        "headless": True,
        "viewport": {"width": 1280, "height": 800},
        "timeout_seconds": 3600,
    }
    calls = kernel_fake.computer_calls(browser.session_id)
    actions = [call for call in calls if call[0] != "screenshot"]
    assert actions == [
        (
            "click_mouse",
            {"x": 100, "y": 200, "button": "left", "click_type": "click", "num_clicks": 1},
        ),
        ("press_key", {"keys": ["Ctrl+Shift+t"]}),
        ("scroll", {"x": 640, "y": 400, "delta_x": 0, "delta_y": 3}),
    ]
    assert ("screenshot", {}) in calls

    events = await read_stream(client, sid, params={"until": "run_end"})
    results = [e["data"] for e in events if e["type"] == "tool.result"]
    assert len(results) == 3 and not any(r["is_error"] for r in results)
    shot = results[0]["screenshot"]
    assert (shot["width"], shot["height"]) == (1280, 800)
    assert not kernel_fake.browser(browser.session_id).deleted  # the session keeps it

    closed = await client.delete(f"/v1/sessions/{sid}")
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    assert kernel_fake.browser(browser.session_id).deleted
    assert [c.op for c in kernel_fake.calls].count("delete") == 1
    page = await client.get(f"/v1/sessions/{sid}/events", params={"format": "json", "limit": 1000})
    assert types(page.json()["data"])[-1] == "session.closed"


async def test_kernel_sessions_need_a_kernel_api_key(service: Service) -> None:
    response = await service.client.post(
        "/v1/sessions", json={"provider": "anthropic", "computer": KERNEL_COMPUTER}
    )
    assert response.status_code == 422
    assert "KERNEL_API_KEY" in response.json()["detail"]


async def test_a_restart_reattaches_to_the_same_kernel_browser(
    clean_db: str, anthropic_fake: FakeAnthropic, kernel_fake: FakeKernel
) -> None:
    settings = make_settings(
        clean_db,
        anthropic_fake.base_url,
        kernel_api_key=kernel_fake.api_key,
        kernel_base_url=kernel_fake.base_url,
        shutdown_grace_s=0.2,
    )
    anthropic_fake.strict = True
    anthropic_fake.enqueue(text_message("interrupted by the restart"), delay=30)
    async with ServiceServer(settings) as first:
        busy = await create_session(first.client, task="look", computer=KERNEL_COMPUTER)
        await anthropic_fake.wait_for_requests(1)  # `busy` is in its model call
        # Only now: runs start in parallel, so the first request must be busy's.
        anthropic_fake.enqueue(text_message("quick done"))
        idle = await create_session(first.client, task="quick", computer=KERNEL_COMPUTER)
        await wait_for_run(first.client, idle["id"], idle["active_run_id"])
        stored = (await first.client.get(f"/v1/sessions/{busy['id']}")).json()["computer"]
    by_id = {b.session_id: b for b in kernel_fake.browsers}
    kept = kernel_fake.browser(stored["kernel_session_id"])
    # The run to resume keeps its remote browser; the idle session's is deleted, not orphaned.
    assert not kept.deleted
    assert [b.deleted for sid, b in by_id.items() if sid != kept.session_id] == [True]

    anthropic_fake.enqueue(
        tool_use_message(computer_call("left_click", coordinate=[5, 6])), text_message("again")
    )
    async with ServiceServer(settings) as second:
        run = await wait_for_run(second.client, busy["id"], busy["active_run_id"])
        assert run["status"] == "completed", run
    assert len(kernel_fake.browsers) == 2  # re-attached, not re-created
    clicks = [c for c in kernel_fake.computer_calls(kept.session_id) if c[0] == "click_mouse"]
    assert clicks and clicks[-1][1]["x"] == 5 and clicks[-1][1]["y"] == 6


async def test_domain_policies_are_refused_on_kernel(kernel_service: Service) -> None:
    response = await kernel_service.client.post(
        "/v1/sessions",
        json={
            "provider": "anthropic",
            "computer": KERNEL_COMPUTER,
            "safety": {"allowed_domains": ["example.com"]},
        },
    )
    assert response.status_code == 422 and "safety.allowed_domains" in response.json()["detail"]
