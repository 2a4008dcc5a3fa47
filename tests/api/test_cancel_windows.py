"""Cancels that land in the window between an action running on the computer and its
tool.result being committed: run.cancelled still names the action as executed, and
the repaired transcript is accepted by the strict fakes in a follow-up run."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.computers.base import Click, ShotImage
from app.computers.fake import FakeComputer
from tests.api.helpers import create_session, read_stream, types, wait_for_run
from tests.conftest import Service
from tests.fakes import openai_server as oai
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    computer_call,
    text_message,
    tool_use_message,
)


class ScreenshotGate:
    """A test-only hook on FakeComputer: the first screenshot after an action hangs (until
    the run is cancelled), so the action has run but its tool.result is not committed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reached = asyncio.Event()
        self.enabled = True
        original = FakeComputer.screenshot
        gate = self

        async def screenshot(computer: FakeComputer) -> ShotImage:
            if gate.enabled and computer.executed:
                gate.enabled = False
                gate.reached.set()
                await asyncio.Event().wait()  # until the cancel interrupts it
            return await original(computer)

        monkeypatch.setattr(FakeComputer, "screenshot", screenshot)

    async def wait(self) -> None:
        await asyncio.wait_for(self.reached.wait(), 10)


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> ScreenshotGate:
    return ScreenshotGate(monkeypatch)


async def cancel_in_the_window(
    service: Service, gate: ScreenshotGate, sid: str, rid: str
) -> dict[str, Any]:
    """Cancel once the action has run; return the run.cancelled data."""
    await gate.wait()
    assert (await service.client.post(f"/v1/sessions/{sid}/cancel")).status_code == 202
    run = await wait_for_run(service.client, sid, rid)
    assert run["status"] == "cancelled"
    events = await read_stream(service.client, sid, params={"follow": "false"})
    # The window: the action's tool.call is in the log, its tool.result is not.
    assert "tool.call" in types(events) and "tool.result" not in types(events)
    (cancelled,) = [e["data"] for e in events if e["type"] == "run.cancelled"]
    return cancelled  # type: ignore[no-any-return]


async def test_anthropic_cancel_after_an_action_ran_reports_it(
    service: Service, strict_fake: FakeAnthropic, gate: ScreenshotGate
) -> None:
    click = computer_call("left_click", coordinate=[5, 6])
    strict_fake.enqueue(tool_use_message(click))
    session = await create_session(service.client, task="click it")
    sid, rid = session["id"], session["active_run_id"]

    cancelled = await cancel_in_the_window(service, gate, sid, rid)

    executed = cancelled["last_action_executed"]
    assert executed["call_id"] == click["id"]
    assert executed["action"]["type"] == "click"
    assert (executed["action"]["x"], executed["action"]["y"]) == (5, 6)
    computer = service.services.computers.get(sid)
    assert isinstance(computer, FakeComputer) and computer.actions == [Click(x=5, y=6)]

    strict_fake.enqueue(text_message("fine"))
    follow = await service.client.post(f"/v1/sessions/{sid}/runs", json={"input": "go on"})
    run = await wait_for_run(service.client, sid, follow.json()["id"])
    assert run["status"] == "completed", run
    assert strict_fake.script_errors == []


async def test_openai_cancel_after_an_action_ran_reports_it(
    openai_service: tuple[Service, oai.FakeOpenAI], gate: ScreenshotGate
) -> None:
    service, fake = openai_service
    call = oai.computer_call(actions=[{"type": "click", "x": 5, "y": 6, "button": "left"}])
    fake.enqueue(oai.response(call))
    session = await create_session(service.client, provider="openai", task="click it")
    sid, rid = session["id"], session["active_run_id"]

    cancelled = await cancel_in_the_window(service, gate, sid, rid)

    executed = cancelled["last_action_executed"]
    assert executed["call_id"] == call["call_id"]
    assert executed["action"]["type"] == "click"

    fake.enqueue(oai.response(oai.message("fine")))
    follow = await service.client.post(f"/v1/sessions/{sid}/runs", json={"input": "go on"})
    run = await wait_for_run(service.client, sid, follow.json()["id"])
    assert run["status"] == "completed", run
    assert fake.script_errors == []
