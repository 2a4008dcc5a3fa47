"""EventSource semantics over real HTTP (SPEC v2.2): a client that reconnects the way a
browser's EventSource does (after the stream ends or drops, again with `Last-Event-ID`,
until it gets 204) sees every event once, in order, and then stops; a closed session is
replayed and closed; a session closed while followed ends its stream."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from tests.api.helpers import assert_gapless, create_session, read_stream, types, wait_for_run
from tests.conftest import Service
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    computer_call,
    text_message,
    tool_use_message,
)


@dataclass
class EventSourceLike:
    """What an EventSource-style client saw: its events and the status of each connection."""

    events: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)


async def follow_like_eventsource(
    client: httpx.AsyncClient,
    sid: str,
    params: dict[str, Any] | None = None,
    *,
    drop_every: int | None = None,
    within: float = 20.0,
) -> EventSourceLike:
    """Reconnect as EventSource does: with the last id seen as `Last-Event-ID`, after the
    server ends the stream or (with `drop_every`) after this client drops it every N
    events, until an answer is 204."""
    seen = EventSourceLike()

    async def run() -> None:
        while True:
            headers = {"Accept": "text/event-stream"}
            if seen.events:
                headers["Last-Event-ID"] = str(seen.events[-1]["seq"])
            async with aconnect_sse(
                client, "GET", f"/v1/sessions/{sid}/events", params=params, headers=headers
            ) as source:
                seen.statuses.append(source.response.status_code)
                if source.response.status_code == 204:
                    return
                assert source.response.status_code == 200
                count = 0
                async for sse in source.aiter_sse():
                    if not sse.data:
                        continue
                    seen.events.append(json.loads(sse.data))
                    count += 1
                    if drop_every is not None and count == drop_every:
                        break  # the connection drops in the middle of the stream

    await asyncio.wait_for(run(), within)
    return seen


async def log_of(client: httpx.AsyncClient, sid: str) -> list[dict[str, Any]]:
    page = await client.get(f"/v1/sessions/{sid}/events", params={"format": "json", "limit": 1000})
    return page.json()["data"]  # type: ignore[no-any-return]


async def test_reconnects_resume_without_gap_or_duplicate_and_end_with_204(
    service: Service, strict_fake: FakeAnthropic
) -> None:
    # Replies held back, so the drops and reconnects happen while the run is live.
    strict_fake.enqueue(
        tool_use_message(computer_call("left_click", coordinate=[10, 10])),
        tool_use_message(computer_call("type", text="hi")),
        tool_use_message(computer_call("key", text="Return")),
        text_message("done"),
        delay=0.2,
    )
    session = await create_session(service.client, task="go")
    sid = session["id"]

    seen = await follow_like_eventsource(service.client, sid, {"until": "run_end"}, drop_every=3)

    assert_gapless(seen.events)
    assert seen.events == await log_of(service.client, sid)
    assert seen.events[-1]["type"] == "run.completed"
    # Several connections (dropped every 3 events), then the end of the run's stream,
    # then one reconnect from its terminal event: 204, and the client stops.
    assert len(seen.statuses) > 3 and seen.statuses[-1] == 204
    assert set(seen.statuses[:-1]) == {200}


async def test_a_closed_session_is_replayed_then_closed_then_204(
    service: Service, strict_fake: FakeAnthropic
) -> None:
    strict_fake.enqueue(text_message("hello"))
    session = await create_session(service.client, task="say hello")
    sid = session["id"]
    await wait_for_run(service.client, sid, session["active_run_id"])
    assert (await service.client.delete(f"/v1/sessions/{sid}")).status_code == 200
    stored = await log_of(service.client, sid)

    # Following (the default) a closed session: the replay, then the stream closes.
    assert await read_stream(service.client, sid, within=5) == stored
    # From a cursor inside the log: the rest, then closed.
    assert await read_stream(service.client, sid, params={"after": 2}, within=5) == stored[2:]
    # At its last event, by ?after= or Last-Event-ID: nothing can come, 204.
    last = str(stored[-1]["seq"])
    by_query = await service.client.get(f"/v1/sessions/{sid}/events", params={"after": last})
    by_header = await service.client.get(
        f"/v1/sessions/{sid}/events", headers={"Last-Event-ID": last}
    )
    assert by_query.status_code == by_header.status_code == 204
    # A JSON page is a page as usual.
    page = await service.client.get(
        f"/v1/sessions/{sid}/events", params={"after": last, "format": "json"}
    )
    assert page.status_code == 200 and page.json()["data"] == []

    # until=run_end on a closed session: the replay still ends at the run's end.
    run_end = next(i for i, e in enumerate(stored) if e["type"] == "run.completed")
    until = await read_stream(service.client, sid, params={"until": "run_end"}, within=5)
    assert until == stored[: run_end + 1]

    # An EventSource-style client gets the log once and stops: one 200, then 204.
    seen = await follow_like_eventsource(service.client, sid)
    assert seen.events == stored and seen.statuses == [200, 204]


async def test_a_session_closed_while_followed_ends_the_stream(
    service: Service, strict_fake: FakeAnthropic
) -> None:
    strict_fake.enqueue(text_message("hello"))
    session = await create_session(service.client, task="say hello")
    sid = session["id"]
    await wait_for_run(service.client, sid, session["active_run_id"])
    # Follow the idle session (the default stream stays open across runs)...
    follower = asyncio.create_task(follow_like_eventsource(service.client, sid))
    await asyncio.sleep(0.3)
    assert not follower.done()
    # ...and close it: the stream ends with session.closed, the reconnect gets 204.
    assert (await service.client.delete(f"/v1/sessions/{sid}")).status_code == 200
    seen = await asyncio.wait_for(follower, 10)
    assert types(seen.events)[-1] == "session.closed"
    assert seen.events == await log_of(service.client, sid)
    assert seen.statuses == [200, 204]
