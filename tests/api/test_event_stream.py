"""The SSE contract details: retry first, pings, ?until=run_end targeting, inlined
images, and curl -N as a client."""

from __future__ import annotations

import asyncio
import json

import httpx

from tests.api.helpers import create_session, read_stream, types, wait_for_run
from tests.conftest import Service, ServiceServer, make_settings
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    computer_call,
    text_message,
    tool_use_message,
)


async def raw_lines(client: httpx.AsyncClient, path: str, count: int, within: float) -> list[str]:
    """The first `count` lines of a stream, as bytes on the wire show them."""
    lines: list[str] = []

    async def read() -> None:
        async with client.stream("GET", path) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                lines.append(line)
                if len(lines) >= count:
                    return

    await asyncio.wait_for(read(), within)
    return lines


async def test_retry_comes_first_and_pings_keep_an_idle_stream_open(
    clean_db: str, strict_fake: FakeAnthropic
) -> None:
    settings = make_settings(clean_db, strict_fake.base_url, sse_ping_seconds=0.2)
    async with ServiceServer(settings) as svc:
        session = await create_session(svc.client)
        lines = await raw_lines(svc.client, f"/v1/sessions/{session['id']}/events", 8, within=5)
    assert lines[0] == "retry: 2000"
    assert "id: 1" in lines and "event: session.created" in lines
    assert lines.count(": ping") >= 1
    # Nothing but stored events, the retry line and ping comments.
    for line in lines:
        assert line == "" or line.split(":", 1)[0] in ("retry", "id", "event", "data", "")


async def test_until_run_end_targets_the_right_run(
    service: Service, strict_fake: FakeAnthropic
) -> None:
    c = service.client
    strict_fake.enqueue(text_message("first"))
    session = await create_session(c, task="one")
    sid, first = session["id"], session["active_run_id"]
    await wait_for_run(c, sid, first)

    # No active run: the latest run is the target, already ended -> replay and close.
    events = await read_stream(c, sid, params={"until": "run_end"})
    assert types(events)[-1] == "run.completed" and events[-1]["run_id"] == first
    # Its terminal event is at or before the cursor: nothing can come, so SSE gets 204
    # (EventSource stops reconnecting) while a JSON page is returned as usual.
    after = {"until": "run_end", "after": events[-1]["seq"]}
    tail = await c.get(f"/v1/sessions/{sid}/events", params=after)
    assert tail.status_code == 204 and tail.content == b""
    page = await c.get(f"/v1/sessions/{sid}/events", params={**after, "format": "json"})
    assert page.status_code == 200 and page.json()["data"] == []

    strict_fake.enqueue(text_message("second"), delay=0.5)
    second = (await c.post(f"/v1/sessions/{sid}/runs", json={"input": "two"})).json()["id"]
    # With a run active, it is the target: the first run's terminal event is passed over.
    live = await read_stream(c, sid, params={"until": "run_end"})
    assert live[-1]["type"] == "run.completed" and live[-1]["run_id"] == second
    assert [e["run_id"] for e in live if e["type"] == "run.completed"] == [first, second]
    # run_id names a run explicitly (and does not filter events).
    named = await read_stream(c, sid, params={"until": "run_end", "run_id": first})
    assert named[-1]["run_id"] == first and named[0]["type"] == "session.created"
    missing = await c.get(
        f"/v1/sessions/{sid}/events", params={"until": "run_end", "run_id": "run_nope"}
    )
    assert missing.status_code == 404


async def test_include_images_inlines_a_data_url(
    service: Service, strict_fake: FakeAnthropic
) -> None:
    strict_fake.enqueue(
        tool_use_message(computer_call("screenshot")),
        text_message("seen"),
    )
    session = await create_session(service.client, task="look")
    events = await read_stream(
        service.client, session["id"], params={"until": "run_end", "include_images": "true"}
    )
    result = next(e for e in events if e["type"] == "tool.result")
    assert result["data"]["screenshot"]["data_url"].startswith("data:image/png;base64,")
    plain = await read_stream(service.client, session["id"], params={"follow": "false"})
    assert (
        "data_url" not in next(e for e in plain if e["type"] == "tool.result")["data"]["screenshot"]
    )


async def test_curl_follows_a_run_to_its_end(service: Service, strict_fake: FakeAnthropic) -> None:
    strict_fake.enqueue(
        tool_use_message(computer_call("left_click", coordinate=[3, 4])), text_message("bye")
    )
    session = await create_session(service.client, task="click")
    proc = await asyncio.create_subprocess_exec(
        "curl",
        "-sN",
        "--max-time",
        "20",
        f"{service.url}/v1/sessions/{session['id']}/events?until=run_end",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0  # the server closed the stream after run.completed
    data = [
        json.loads(line[len("data: ") :])
        for line in out.decode().splitlines()
        if line.startswith("data: ")
    ]
    assert [e["seq"] for e in data] == list(range(1, len(data) + 1))
    assert data[-1]["type"] == "run.completed" and data[-1]["data"]["output"] == "bye"
