"""Runs end to end over real HTTP on the fake computer: the event stream of a run,
resuming with Last-Event-ID, cancel latency, provider faults, queueing, conflicts."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from httpx_sse import aconnect_sse

from app.computers.base import Click, Type, Wait
from tests.api.helpers import (
    FAKE_COMPUTER,
    assert_gapless,
    create_session,
    read_stream,
    types,
    wait_for_event,
    wait_for_run,
)
from tests.api.helpers import (
    fake_computer as computer_of,
)
from tests.conftest import Service, ServiceServer, make_settings
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    computer_call,
    text_message,
    tool_use_message,
)


async def test_a_run_streams_every_event_and_completes(
    service: Service, strict_fake: FakeAnthropic
) -> None:
    strict_fake.enqueue(
        tool_use_message(computer_call("left_click", coordinate=[100, 200]), text="Clicking"),
        tool_use_message(computer_call("type", text="hello")),
        text_message("The form is filled."),
    )
    session = await create_session(service.client, task="Fill the form")
    sid, rid = session["id"], session["active_run_id"]
    assert session["status"] == "running" and rid

    events = await read_stream(service.client, sid, params={"until": "run_end"})

    assert_gapless(events)
    kinds = types(events)
    assert kinds[:3] == ["session.created", "run.queued", "run.started"]
    assert kinds[-1] == "run.completed"
    for kind in ("turn.started", "turn.completed", "assistant.message", "tool.call", "tool.result"):
        assert kind in kinds
    calls = [e["data"] for e in events if e["type"] == "tool.call"]
    assert [c["action"]["type"] for c in calls] == ["click", "type"]
    result = next(e["data"] for e in events if e["type"] == "tool.result")
    assert result["is_error"] is False
    shot = result["screenshot"]
    assert shot["url"] == f"/v1/sessions/{sid}/screenshots/{shot['id']}"
    image = await service.client.get(shot["url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content.startswith(b"\x89PNG") and (shot["width"], shot["height"]) == (1280, 800)
    assert events[-1]["data"]["output"] == "The form is filled."
    assert computer_of(service, sid).actions == [Click(x=100, y=200), Type(text="hello")]

    run = (await service.client.get(f"/v1/sessions/{sid}/runs/{rid}")).json()
    assert run["status"] == "completed" and run["stop_reason"] == "end_turn"
    assert run["turns"] == 3
    turns = (await service.client.get(f"/v1/sessions/{sid}/turns", params={"run_id": rid})).json()
    assert [t["index"] for t in turns["data"]] == [0, 1, 2]
    assert turns["data"][0]["response"]["content"][-1]["type"] == "tool_use"
    # The run's usage is the sum of its turns' (each counted once).
    for key in ("output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
        assert run["usage"][key] == sum(t["usage"][key] for t in turns["data"])
    assert run["usage"]["output_tokens"] > 0
    got = (await service.client.get(f"/v1/sessions/{sid}")).json()
    assert got["status"] == "idle" and got["last_run"] == {
        "id": rid,
        "status": "completed",
        "stop_reason": "end_turn",
    }
    assert got["last_event_seq"] == events[-1]["seq"]
    assert got["usage"]["input_tokens"] == run["usage"]["input_tokens"]
    assert strict_fake.script_errors == []


async def test_reconnecting_at_every_point_yields_exactly_the_missing_events(
    service: Service, strict_fake: FakeAnthropic
) -> None:
    # A live run: each model reply is held back, so reconnects happen mid-run.
    strict_fake.enqueue(
        tool_use_message(computer_call("left_click", coordinate=[10, 10])),
        tool_use_message(computer_call("key", text="Return")),
        text_message("done"),
        delay=0.3,
    )
    session = await create_session(service.client, task="go")
    sid = session["id"]
    received: list[dict] = []
    # Disconnect after every event and resume from the last one seen.
    while not received or received[-1]["type"] != "run.completed":
        last = received[-1]["seq"] if received else 0
        received.extend(await _one_event(service, sid, last))
    assert_gapless(received)
    full = (
        await service.client.get(
            f"/v1/sessions/{sid}/events", params={"format": "json", "limit": 1000}
        )
    ).json()
    assert received == full["data"]
    # And after the run, from every cursor, a finite replay returns exactly the rest.
    for cursor in range(len(full["data"]) + 1):
        rest = await read_stream(
            service.client, sid, headers={"Last-Event-ID": str(cursor)}, params={"follow": "false"}
        )
        assert rest == full["data"][cursor:]


async def _one_event(service: Service, sid: str, last: int) -> list[dict]:
    """Connect with Last-Event-ID (and a conflicting ?after=, which must lose), take one event."""
    events: list[dict] = []
    async with aconnect_sse(
        service.client,
        "GET",
        f"/v1/sessions/{sid}/events",
        params={"after": "999999"},
        headers={"Last-Event-ID": str(last)},
    ) as source:
        async for sse in source.aiter_sse():
            if sse.data:
                events.append(json.loads(sse.data))
                break
    return events


async def test_cancel_during_a_long_model_call_reaches_every_subscriber_fast(
    service: Service, strict_fake: FakeAnthropic
) -> None:
    strict_fake.enqueue(text_message("never seen"), delay=30)
    session = await create_session(service.client, task="slow")
    sid, rid = session["id"], session["active_run_id"]
    await wait_for_event(service.client, sid, "turn.started")
    await strict_fake.wait_for_requests(1)
    # Each subscriber replays just the latest event: once it has that, its replay (one
    # read of the database) is over, and whatever is committed later reaches it live.
    latest = (await service.client.get(f"/v1/sessions/{sid}")).json()["last_event_seq"]
    attached = [asyncio.Event() for _ in range(3)]
    subscribers = [
        asyncio.create_task(_until_cancelled(service, sid, latest - 1, replayed))
        for replayed in attached
    ]
    async with asyncio.timeout(10):
        await asyncio.gather(*(replayed.wait() for replayed in attached))
    started = time.monotonic()
    response = await service.client.post(f"/v1/sessions/{sid}/runs/{rid}/cancel")
    streams = await asyncio.gather(*subscribers)
    elapsed = time.monotonic() - started
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    for events in streams:
        assert events[0]["seq"] == latest  # where the replay started
        assert types(events)[-1] == "run.cancelled", f"not delivered live: {types(events)}"
        assert_gapless(events, start=latest)
        cancelled = events[-1]
        assert cancelled["data"]["stop_reason"] == "cancelled"
        assert cancelled["data"]["last_action_executed"] is None
    assert elapsed < 1.0, f"cancel took {elapsed:.3f}s"
    # Idempotent: a second cancel answers 200 with the run unchanged.
    again = await service.client.post(f"/v1/sessions/{sid}/runs/{rid}/cancel")
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    # A follow-up run works against the strict fake.
    strict_fake.enqueue(text_message("second run done"))
    follow = await service.client.post(f"/v1/sessions/{sid}/runs", json={"input": "again"})
    assert follow.status_code == 202
    run = await wait_for_run(service.client, sid, follow.json()["id"])
    assert run["status"] == "completed" and run["output"] == "second run done"
    assert strict_fake.script_errors == []


async def _until_cancelled(
    service: Service, sid: str, after: int, replayed: asyncio.Event, within: float = 10.0
) -> list[dict[str, Any]]:
    """A stream's events after `after` until run.cancelled (what came, if that never does
    within `within` s); `replayed` is set on the first one."""
    events: list[dict[str, Any]] = []
    try:
        async with (
            asyncio.timeout(within),
            aconnect_sse(
                service.client, "GET", f"/v1/sessions/{sid}/events", params={"after": after}
            ) as source,
        ):
            async for sse in source.aiter_sse():
                if not sse.data:
                    continue  # the leading retry: frame
                events.append(json.loads(sse.data))
                replayed.set()
                if events[-1]["type"] == "run.cancelled":
                    break
    except TimeoutError:
        pass
    return events


async def test_cancel_during_an_action_repairs_the_transcript(
    service: Service, strict_fake: FakeAnthropic
) -> None:
    click = computer_call("left_click", coordinate=[5, 5])
    strict_fake.enqueue(
        tool_use_message(click),
        tool_use_message(computer_call("wait", duration=30)),
    )
    session = await create_session(service.client, task="wait a while")
    sid = session["id"]
    # The wait action is in flight once its tool.call is committed.
    deadline = time.monotonic() + 10
    while True:
        page = (
            await service.client.get(f"/v1/sessions/{sid}/events", params={"format": "json"})
        ).json()
        calls = [e for e in page["data"] if e["type"] == "tool.call"]
        if len(calls) == 2:
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    subscriber = asyncio.create_task(read_stream(service.client, sid, stop_at="run.cancelled"))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    response = await service.client.post(f"/v1/sessions/{sid}/cancel")
    events = await subscriber
    assert time.monotonic() - started < 1.0
    assert response.status_code == 202
    cancelled = events[-1]["data"]
    assert cancelled["last_action_executed"]["call_id"] == click["id"]
    assert cancelled["last_action_executed"]["action"]["type"] == "click"
    assert computer_of(service, sid).actions[:1] == [Click(x=5, y=5)]
    assert Wait(seconds=30) in computer_of(service, sid).actions  # started, then interrupted

    strict_fake.enqueue(text_message("fine"))
    follow = await service.client.post(f"/v1/sessions/{sid}/runs", json={"input": "carry on"})
    run = await wait_for_run(service.client, sid, follow.json()["id"])
    assert run["status"] == "completed", run
    # The strict fake accepted the repaired transcript: the wait got an error result.
    last = strict_fake.last_request.body["messages"]
    answered = [
        b
        for m in last
        for b in m["content"]
        if isinstance(b, dict) and b.get("type") == "tool_result"
    ]
    assert answered[-1]["is_error"] is True
    assert strict_fake.script_errors == []


async def test_overloaded_then_success_is_retried_visibly(
    service: Service, strict_fake: FakeAnthropic
) -> None:
    strict_fake.fail_next(529, times=2)
    strict_fake.enqueue(text_message("ok"))
    session = await create_session(service.client, task="hi")
    events = await read_stream(service.client, session["id"], params={"until": "run_end"})
    retries = [e["data"] for e in events if e["type"] == "provider.retry"]
    assert [r["attempt"] for r in retries] == [1, 2]
    assert all(r["status_code"] == 529 for r in retries)
    assert events[-1]["type"] == "run.completed"


async def test_persistent_500_fails_the_run_with_the_provider_error(
    service: Service, strict_fake: FakeAnthropic
) -> None:
    strict_fake.fail_next(500, times=5, message="upstream exploded")  # 1 try + 4 retries
    session = await create_session(service.client, task="hi")
    events = await read_stream(service.client, session["id"], params={"until": "run_end"})
    assert len([e for e in events if e["type"] == "provider.retry"]) == 4
    failed = events[-1]
    assert failed["type"] == "run.failed"
    assert failed["data"]["stop_reason"] == "error"
    assert "upstream exploded" in failed["data"]["error"]["message"]
    run = (
        await service.client.get(f"/v1/sessions/{session['id']}/runs/{session['active_run_id']}")
    ).json()
    assert run["status"] == "failed" and run["error"]["type"] == "provider_error"
    # The service lives on: the next run of the same session works.
    strict_fake.enqueue(text_message("recovered"))
    follow = await service.client.post(
        f"/v1/sessions/{session['id']}/runs", json={"input": "retry"}
    )
    assert (await wait_for_run(service.client, session["id"], follow.json()["id"]))[
        "status"
    ] == "completed"


async def test_a_second_concurrent_run_conflicts(
    service: Service, strict_fake: FakeAnthropic
) -> None:
    strict_fake.enqueue(text_message("slow"), delay=2)
    session = await create_session(service.client, task="one")
    second = await service.client.post(f"/v1/sessions/{session['id']}/runs", json={"input": "two"})
    assert second.status_code == 409
    assert second.headers["content-type"].startswith("application/problem+json")
    await service.client.post(f"/v1/sessions/{session['id']}/cancel")
    none_active = await service.client.post(f"/v1/sessions/{session['id']}/cancel")
    assert none_active.status_code == 409


async def test_over_the_concurrency_limit_runs_wait_queued(
    clean_db: str, strict_fake: FakeAnthropic
) -> None:
    settings = make_settings(clean_db, strict_fake.base_url, max_active_runs=1)
    async with ServiceServer(settings) as svc:
        strict_fake.enqueue(text_message("first"), delay=1.0)
        strict_fake.enqueue(text_message("second"))
        first = await create_session(svc.client, task="a")
        await strict_fake.wait_for_requests(1)
        second = await create_session(svc.client, task="b")
        queued = (
            await svc.client.get(f"/v1/sessions/{second['id']}/runs/{second['active_run_id']}")
        ).json()
        assert queued["status"] == "queued"
        done1 = await wait_for_run(svc.client, first["id"], first["active_run_id"])
        done2 = await wait_for_run(svc.client, second["id"], second["active_run_id"])
        assert (done1["output"], done2["output"]) == ("first", "second")
        assert done2["started_at"] >= done1["ended_at"]


async def test_json_page_mode_and_follow_false(
    service: Service, strict_fake: FakeAnthropic
) -> None:
    strict_fake.enqueue(text_message("hi"))
    session = await create_session(service.client, task="x", computer=FAKE_COMPUTER)
    await read_stream(service.client, session["id"], params={"until": "run_end"})
    page = await service.client.get(
        f"/v1/sessions/{session['id']}/events",
        params={"limit": 2},
        headers={"Accept": "application/json"},
    )
    body = page.json()
    assert (
        [e["seq"] for e in body["data"]] == [1, 2]
        and body["has_more"] is True
        and body["next_after"] == 2
    )
    rest = await read_stream(service.client, session["id"], params={"after": 2, "follow": "false"})
    assert rest[0]["seq"] == 3 and rest[-1]["type"] == "run.completed"


async def test_max_steps_ends_the_run(service: Service, strict_fake: FakeAnthropic) -> None:
    strict_fake.enqueue(
        *[tool_use_message(computer_call("mouse_move", coordinate=[i, i])) for i in range(2)]
    )
    session = await create_session(service.client, task="loop", options={"max_steps": 2})
    events = await read_stream(service.client, session["id"], params={"until": "run_end"})
    end = events[-1]
    assert end["type"] == "run.failed" and end["data"]["stop_reason"] == "max_steps"
    assert len(strict_fake.requests) == 2
    # The last turn's results were recorded by the run's final commit, usage counted once.
    sid, rid = session["id"], session["active_run_id"]
    turns = (await service.client.get(f"/v1/sessions/{sid}/turns", params={"run_id": rid})).json()
    assert [len(t["results"]) for t in turns["data"]] == [1, 1]
    run = (await service.client.get(f"/v1/sessions/{sid}/runs/{rid}")).json()
    assert run["usage"]["output_tokens"] == sum(t["usage"]["output_tokens"] for t in turns["data"])
    assert end["data"]["usage"] == run["usage"]
    # Stopped at a step boundary: every call answered, so a follow-up run is valid.
    strict_fake.enqueue(text_message("ok"))
    follow = await service.client.post(
        f"/v1/sessions/{session['id']}/runs", json={"input": "stop now"}
    )
    assert (await wait_for_run(service.client, session["id"], follow.json()["id"]))[
        "status"
    ] == "completed"
    assert strict_fake.script_errors == []


async def test_the_run_time_limit_is_enforced(clean_db: str, strict_fake: FakeAnthropic) -> None:
    async with ServiceServer(
        make_settings(clean_db, strict_fake.base_url, run_time_limit_s=0.5)
    ) as svc:
        strict_fake.enqueue(text_message("too late"), delay=30)
        session = await create_session(svc.client, task="slow")
        run = await wait_for_run(svc.client, session["id"], session["active_run_id"], within=5)
        assert run["status"] == "failed" and run["stop_reason"] == "time_limit"
        assert run["error"]["type"] == "time_limit"


async def test_closing_a_session_cancels_its_run(
    service: Service, strict_fake: FakeAnthropic
) -> None:
    strict_fake.enqueue(text_message("never"), delay=30)
    session = await create_session(service.client, task="long")
    await strict_fake.wait_for_requests(1)
    closed = await service.client.delete(f"/v1/sessions/{session['id']}")
    assert closed.status_code == 200
    body = closed.json()
    assert body["status"] == "closed" and body["active_run_id"] is None
    assert body["last_run"]["status"] == "cancelled"
    assert service.services.computers.get(session["id"]) is None
    events = await read_stream(service.client, session["id"], params={"follow": "false"})
    assert types(events)[-2:] == ["run.cancelled", "session.closed"]


async def test_last_action_executed_survives_a_restart(
    clean_db: str, strict_fake: FakeAnthropic
) -> None:
    settings = make_settings(clean_db, strict_fake.base_url)
    click = computer_call("left_click", coordinate=[4, 4])
    async with ServiceServer(settings) as first:
        strict_fake.enqueue(tool_use_message(click))
        strict_fake.enqueue(text_message("never"), delay=30)
        session = await create_session(first.client, task="click then think")
        sid = session["id"]
        await strict_fake.wait_for_requests(2)  # the click ran; the second model call hangs
    strict_fake.enqueue(text_message("never either"), delay=30)
    async with ServiceServer(settings) as second:
        await wait_for_event(second.client, sid, "run.resumed")
        await strict_fake.wait_for_requests(3)
        cancelled = await second.client.post(f"/v1/sessions/{sid}/cancel")
        assert cancelled.status_code == 202
        events = await read_stream(second.client, sid, params={"follow": "false"})
        end = events[-1]
        assert end["type"] == "run.cancelled"
        assert end["data"]["last_action_executed"]["call_id"] == click["id"]


async def test_a_step_is_two_writes(service: Service, strict_fake: FakeAnthropic) -> None:
    """The model's reply rides with the intent to run its action, the action's result
    with the next turn.started: a step costs two commits however long the run."""
    log = service.services.log
    writes: dict[str | None, int] = {}
    transact = log.transact

    async def counted(session_id: str, run_id: str | None, *args: Any, **kwargs: Any) -> Any:
        writes[run_id] = writes.get(run_id, 0) + 1
        return await transact(session_id, run_id, *args, **kwargs)

    log.transact = counted  # type: ignore[method-assign]
    runs = {}
    for steps in (1, 5):
        strict_fake.enqueue(
            *[
                tool_use_message(computer_call("left_click", coordinate=[10 + k, 20]))
                for k in range(steps)
            ],
            text_message("Done."),
        )
        session = await create_session(service.client, task="Click")
        events = await read_stream(service.client, session["id"], params={"until": "run_end"})
        assert types(events)[-1] == "run.completed"
        assert types(events).count("tool.result") == steps
        runs[steps] = session["active_run_id"]
    assert writes[runs[5]] - writes[runs[1]] == 2 * (5 - 1)
    assert strict_fake.script_errors == []
