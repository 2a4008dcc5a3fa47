"""OpenAILoop inside the real service (runner, ServiceRunContext, database, REST), against
the strict fake Responses API: a rejected provider check ends the run `cancelled` and the
follow-up run branches; a cancel mid-batch is repaired so the follow-up is accepted."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.api.helpers import create_session, wait_for_run
from tests.conftest import Service
from tests.fakes.openai_server import (
    FakeOpenAI,
    computer_call,
    message,
    reasoning,
    response,
    safety_check,
)

CLICK = {"type": "click", "x": 10, "y": 20, "button": "left"}
TYPE = {"type": "type", "text": "hi"}


async def pending_check(service: Service, sid: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        page = await service.client.get(
            f"/v1/sessions/{sid}/safety-checks", params={"status": "pending"}
        )
        if page.json()["data"]:
            return page.json()["data"][0]  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, "the run never waited for a human"
        await asyncio.sleep(0.02)


async def test_rejection_then_follow_up(openai_service: tuple[Service, FakeOpenAI]) -> None:
    service, fake = openai_service
    check = safety_check("sensitive_domain")
    fake.enqueue(
        response(computer_call(actions=[CLICK])),
        response(reasoning("Type"), computer_call(actions=[TYPE], pending_safety_checks=[check])),
    )
    session = await create_session(service.client, provider="openai", task="go")
    sid, first = session["id"], session["active_run_id"]

    found = await pending_check(service, sid)
    assert found["provider_check_id"] == check["id"] and found["code"] == "sensitive_domain"
    reply = await service.client.post(
        f"/v1/sessions/{sid}/safety-checks/{found['id']}/reject", json={"reason": "no"}
    )
    assert reply.status_code == 200
    run = await wait_for_run(service.client, sid, first)
    assert (run["status"], run["stop_reason"]) == ("cancelled", "safety_check_rejected")

    fake.enqueue(response(message("Fine, nothing typed")))
    follow = await service.client.post(f"/v1/sessions/{sid}/runs", json={"input": "stop"})
    run = await wait_for_run(service.client, sid, follow.json()["id"])
    assert run["status"] == "completed" and run["output"] == "Fine, nothing typed"
    body = fake.requests[-1].body
    assert body["previous_response_id"] == fake.responses[0]["id"]
    assert fake.script_errors == []


async def test_cancel_mid_batch_then_follow_up(openai_service: tuple[Service, FakeOpenAI]) -> None:
    service, fake = openai_service
    fake.enqueue(response(computer_call(actions=[CLICK, {"type": "wait"}, TYPE])))
    session = await create_session(service.client, provider="openai", task="go")
    sid, first = session["id"], session["active_run_id"]
    deadline = time.monotonic() + 10
    while True:  # the wait action (2 s) is running
        page = await service.client.get(f"/v1/sessions/{sid}/events", params={"format": "json"})
        calls = [e for e in page.json()["data"] if e["type"] == "tool.call"]
        if len(calls) == 2:
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert (await service.client.post(f"/v1/sessions/{sid}/cancel")).status_code == 202
    run = await wait_for_run(service.client, sid, first)
    assert run["status"] == "cancelled"
    page = await service.client.get(f"/v1/sessions/{sid}/events", params={"format": "json"})
    (ended,) = [e for e in page.json()["data"] if e["type"] == "run.cancelled"]
    assert ended["data"]["last_action_executed"]["action"]["type"] == "click"

    fake.enqueue(response(message("Resumed")))
    follow = await service.client.post(f"/v1/sessions/{sid}/runs", json={"input": "go on"})
    run = await wait_for_run(service.client, sid, follow.json()["id"])
    assert run["status"] == "completed", run
    body = fake.requests[-1].body
    assert [i["type"] for i in body["input"]] == ["computer_call_output", "message", "message"]
    assert fake.script_errors == []
