"""The documented event schemas (app/events/schemas.py, published in openapi/) against
the events the service really emits: scripted runs of both providers on the fake
computer, over HTTP, with retries, failures, cancels, safety checks and a restart;
every event of the log is validated against the `Event` union. A field the emitters
add, drop or reshape without the schema following fails here."""

from __future__ import annotations

import asyncio
import time
from typing import Any, get_args

from app.agents.base import StopReason as LoopStopReason
from app.events.schemas import EVENT_ADAPTER, AnyEvent, Event, StopReason
from app.events.types import EVENT_TYPES
from app.main import create_app
from tests.api.helpers import create_session, read_stream, wait_for_run
from tests.conftest import Service, ServiceServer, make_settings
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    computer_call,
    redacted_thinking_block,
    text_message,
    tool_use_message,
)
from tests.fakes.openai_items import computer_call as openai_call
from tests.fakes.openai_items import message, reasoning, response
from tests.fakes.openai_server import FakeOpenAI

SAFETY_EVENTS = {
    "run.awaiting_safety_check",
    "safety_check.pending",
    "safety_check.acknowledged",
    "safety_check.rejected",
    "safety_check.expired",
}

EVERY_ACTION = [
    computer_call("left_click", coordinate=[100, 200]),
    computer_call("double_click", coordinate=[100, 200], text="shift"),
    computer_call("mouse_move", coordinate=[10, 10]),
    computer_call("left_click_drag", start_coordinate=[1, 1], coordinate=[50, 50]),
    computer_call("left_mouse_down"),
    computer_call("left_mouse_up"),
    computer_call("scroll", coordinate=[640, 400], scroll_direction="down", scroll_amount=3),
    computer_call("type", text="hello"),
    computer_call("key", text="ctrl+a"),
    computer_call("hold_key", text="shift", duration=0.01),
    computer_call("wait", duration=0.01),
    computer_call("screenshot"),
    computer_call("cursor_position"),
    computer_call("zoom", region=[0, 0, 640, 400]),
]


def union_members() -> tuple[Any, ...]:
    union, _discriminator = get_args(AnyEvent)
    return get_args(union)


def assert_documented(event: dict[str, Any]) -> Event:
    """Validate one wire event; also require that nothing was dropped on the way (the
    models ignore unknown fields, so an undocumented field shows up as a difference)."""
    validated = EVENT_ADAPTER.validate_python(event)
    model = validated.root
    assert set(event) == set(type(model).model_fields), event
    dumped = model.data.model_dump(mode="json", exclude_unset=True)
    assert dumped == event["data"], f"{event['type']}: undocumented or reshaped fields"
    return validated


async def events_of(service: Service, sid: str) -> list[dict[str, Any]]:
    page = await service.client.get(
        f"/v1/sessions/{sid}/events", params={"format": "json", "limit": 1000}
    )
    body = page.json()
    assert body["has_more"] is False
    return body["data"]  # type: ignore[no-any-return]


def test_the_union_has_one_member_per_event_type() -> None:
    types = [get_args(m.model_fields["type"].annotation)[0] for m in union_members()]
    assert sorted(types) == sorted(EVENT_TYPES)
    assert set(get_args(StopReason)) == set(get_args(LoopStopReason))


def test_openapi_documents_every_event_for_sse_and_json() -> None:
    spec = create_app().openapi()
    schemas = spec["components"]["schemas"]
    assert set(schemas["Event"]["discriminator"]["mapping"]) == EVENT_TYPES
    assert schemas["EventPage"]["properties"]["data"]["items"] == {
        "$ref": "#/components/schemas/Event"
    }
    content = spec["paths"]["/v1/sessions/{sid}/events"]["get"]["responses"]["200"]["content"]
    data_line = content["text/event-stream"]["itemSchema"]["properties"]["data"]
    assert data_line["contentSchema"] == {"$ref": "#/components/schemas/Event"}
    assert schemas["ToolCallData"]["properties"]["action"]["anyOf"][0]["discriminator"]


async def test_every_emitted_event_matches_its_documented_schema(
    service: Service, anthropic_fake: FakeAnthropic
) -> None:
    fake = anthropic_fake
    fake.strict = True
    fake.fail_next(529, times=1)
    fake.enqueue(
        tool_use_message(
            *EVERY_ACTION, text="Trying everything", thinking=["Look", redacted_thinking_block()]
        ),
        # Bad input (off screen): answered without running, and its sibling skipped.
        tool_use_message(
            computer_call("left_click", coordinate=[5000, 5]), computer_call("type", text="x")
        ),
        text_message("All done.", thinking="finished"),
    )
    session = await create_session(
        service.client, task="Exercise every action", options={"thinking_budget": 2048}
    )
    sid, first = session["id"], session["active_run_id"]
    assert (await wait_for_run(service.client, sid, first))["status"] == "completed"

    # A run that fails with the provider's error (status_code in `error`).
    fake.fail_next(500, times=5, message="upstream exploded")
    failed = await service.client.post(f"/v1/sessions/{sid}/runs", json={"input": "fail"})
    assert (await wait_for_run(service.client, sid, failed.json()["id"]))["status"] == "failed"

    # A run cancelled mid-action, after one action ran (last_action_executed is set).
    fake.enqueue(
        tool_use_message(
            computer_call("left_click", coordinate=[5, 5]), computer_call("wait", duration=30)
        )
    )
    cancelled = await service.client.post(f"/v1/sessions/{sid}/runs", json={"input": "wait"})
    run_id = cancelled.json()["id"]
    await _until_calls(service, sid, run_id, 2)
    assert (await service.client.post(f"/v1/sessions/{sid}/cancel")).status_code == 202

    assert (await service.client.delete(f"/v1/sessions/{sid}")).status_code == 200

    events = await events_of(service, sid)
    validated = [assert_documented(e) for e in events]
    emitted = {v.root.type for v in validated}
    assert emitted == EVENT_TYPES - SAFETY_EVENTS - {"run.resumed"}, emitted
    actions = {
        e["data"]["action"]["type"]
        for e in events
        if e["type"] == "tool.call" and e["data"]["action"]
    }
    assert len(actions) == 13  # every normalized action type
    assert any(e["data"].get("redacted") for e in events if e["type"] == "assistant.thinking")
    assert fake.script_errors == []

    # The SSE form carries the same objects, and inlined images are documented too.
    streamed = await read_stream(
        service.client, sid, params={"follow": "false", "include_images": "true"}
    )
    shots = [e["data"]["screenshot"] for e in streamed if e["type"] == "tool.result"]
    assert any(s and s["data_url"].startswith("data:image/png;base64,") for s in shots)
    for event in streamed:
        assert_documented(event)


async def test_a_resumed_run_matches_its_documented_schema(
    clean_db: str, anthropic_fake: FakeAnthropic
) -> None:
    settings = make_settings(clean_db, anthropic_fake.base_url, shutdown_grace_s=0.1)
    anthropic_fake.enqueue(text_message("too late"), delay=30)
    async with ServiceServer(settings) as first:
        session = await create_session(first.client, task="survive a restart")
        await anthropic_fake.wait_for_requests(1)
    # The run was interrupted by the shutdown and left resumable: a new process resumes it.
    anthropic_fake.reset()
    anthropic_fake.enqueue(text_message("resumed"))
    async with ServiceServer(settings) as second:
        run = await wait_for_run(second.client, session["id"], session["active_run_id"])
        assert run["status"] == "completed"
        events = await events_of(second, session["id"])
    assert "run.resumed" in [e["type"] for e in events]
    for event in events:
        assert_documented(event)


async def test_safety_check_events_match_their_documented_schemas(
    service: Service, anthropic_fake: FakeAnthropic
) -> None:
    fake = anthropic_fake
    fake.strict = True
    policy = {"require_ack_for": ["click"]}
    click = computer_call("left_click", coordinate=[5, 5])
    # Acknowledged, then rejected, then cancelled while waiting (the check expires with the run).
    fake.enqueue(tool_use_message(click), text_message("clicked"))
    session = await create_session(service.client, task="click", safety=policy)
    sid, first = session["id"], session["active_run_id"]
    await _decide(service, sid, "acknowledge", None)
    assert (await wait_for_run(service.client, sid, first))["status"] == "completed"

    fake.enqueue(tool_use_message(computer_call("left_click", coordinate=[6, 6])))
    second = (await service.client.post(f"/v1/sessions/{sid}/runs", json={"input": "again"})).json()
    await _decide(service, sid, "reject", {"reason": "not now"})
    run = await wait_for_run(service.client, sid, second["id"])
    assert run["stop_reason"] == "safety_check_rejected"

    fake.enqueue(tool_use_message(computer_call("left_click", coordinate=[7, 7])))
    third = (
        await service.client.post(f"/v1/sessions/{sid}/runs", json={"input": "once more"})
    ).json()
    await _pending_check(service, sid)
    await service.client.post(f"/v1/sessions/{sid}/cancel")
    assert (await wait_for_run(service.client, sid, third["id"]))["status"] == "cancelled"

    # A check nobody decides expires on its own and ends the run.
    fake.enqueue(tool_use_message(computer_call("left_click", coordinate=[8, 8])))
    timed = await create_session(
        service.client, task="click", safety={**policy, "safety_check_timeout_s": 0.3}
    )
    run = await wait_for_run(service.client, timed["id"], timed["active_run_id"])
    assert run["stop_reason"] == "safety_check_timeout"

    events = await events_of(service, sid) + await events_of(service, timed["id"])
    for event in events:
        assert_documented(event)
    assert SAFETY_EVENTS | {"run.resumed"} <= {e["type"] for e in events}
    assert fake.script_errors == []


async def test_openai_events_match_their_documented_schemas(
    clean_db: str, anthropic_fake: FakeAnthropic
) -> None:
    with FakeOpenAI() as fake:
        settings = make_settings(
            clean_db,
            anthropic_fake.base_url,
            openai_api_key="test-key",
            openai_base_url=fake.base_url,
        )
        batch = [
            {"type": "click", "x": 10, "y": 20, "button": "left"},
            {"type": "type", "text": "hi"},
        ]
        fake.enqueue(
            response(
                reasoning("Click, then type"),
                openai_call(
                    actions=batch, pending_safety_checks=[{"code": "malicious_instructions"}]
                ),
            ),
            response(message("Done")),
        )
        async with ServiceServer(settings) as service:
            session = await create_session(service.client, provider="openai", task="go")
            sid = session["id"]
            await _decide(service, sid, "acknowledge", None)
            run = await wait_for_run(service.client, sid, session["active_run_id"])
            assert run["status"] == "completed", run
            events = await events_of(service, sid)
    for event in events:
        assert_documented(event)
    kinds = {e["type"] for e in events}
    assert {"tool.call", "tool.result", "safety_check.pending", "run.completed"} <= kinds
    assert fake.script_errors == []


async def _pending_check(service: Service, sid: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        page = await service.client.get(
            f"/v1/sessions/{sid}/safety-checks", params={"status": "pending"}
        )
        session = (await service.client.get(f"/v1/sessions/{sid}")).json()
        if page.json()["data"] and session["status"] == "awaiting_safety_check":
            return page.json()["data"][0]  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, "the run never waited for a human"
        await asyncio.sleep(0.02)


async def _decide(service: Service, sid: str, verdict: str, body: dict[str, Any] | None) -> None:
    check = await _pending_check(service, sid)
    response = await service.client.post(
        f"/v1/sessions/{sid}/safety-checks/{check['id']}/{verdict}", json=body
    )
    assert response.status_code == 200, response.text


async def _until_calls(service: Service, sid: str, run_id: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        calls = [
            e
            for e in await events_of(service, sid)
            if e["type"] == "tool.call" and e["run_id"] == run_id
        ]
        if len(calls) >= count:
            return
        assert time.monotonic() < deadline, "the tool calls never came"
        await asyncio.sleep(0.02)
