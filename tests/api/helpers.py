"""Helpers for the API tests: a real SSE client (httpx-sse), polling, and the fake
computer behind a session."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from app.computers.fake import FakeComputer
from tests.conftest import Service

FAKE_COMPUTER = {"type": "fake", "display": {"width": 1280, "height": 800}}


async def read_stream(
    client: httpx.AsyncClient,
    session_id: str,
    *,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    stop_at: str | None = None,
    within: float = 20.0,
) -> list[dict[str, Any]]:
    """Events of one SSE connection until the server closes it (or `stop_at` arrives)."""
    events: list[dict[str, Any]] = []

    async def consume() -> None:
        async with aconnect_sse(
            client,
            "GET",
            f"/v1/sessions/{session_id}/events",
            params=params,
            headers=dict(headers or {}),
        ) as source:
            if source.response.status_code == 204:
                return  # nothing could ever come (SPEC v2.2): no events
            assert source.response.headers["content-type"].startswith("text/event-stream")
            async for sse in source.aiter_sse():
                if not sse.data:
                    continue  # the leading retry: frame
                event = json.loads(sse.data)
                assert sse.id == str(event["seq"]) and sse.event == event["type"]
                events.append(event)
                if stop_at is not None and event["type"] == stop_at:
                    return

    await asyncio.wait_for(consume(), within)
    return events


async def create_session(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    payload = {"provider": "anthropic", "computer": FAKE_COMPUTER} | body
    response = await client.post("/v1/sessions", json=payload)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def wait_for_run(
    client: httpx.AsyncClient, session_id: str, run_id: str, within: float = 20.0
) -> dict[str, Any]:
    """Poll until the run is terminal; return it."""
    deadline = time.monotonic() + within
    while True:
        run = (await client.get(f"/v1/sessions/{session_id}/runs/{run_id}")).json()
        if run["status"] in ("completed", "failed", "cancelled"):
            return run  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"run still {run['status']}"
        await asyncio.sleep(0.05)


async def wait_for_event(
    client: httpx.AsyncClient, session_id: str, type_: str, within: float = 20.0
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        page = (
            await client.get(
                f"/v1/sessions/{session_id}/events", params={"format": "json", "limit": 1000}
            )
        ).json()
        for event in page["data"]:
            if event["type"] == type_:
                return event  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"no {type_} event"
        await asyncio.sleep(0.05)


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def assert_gapless(events: list[dict[str, Any]], start: int = 1) -> None:
    assert [e["seq"] for e in events] == list(range(start, start + len(events)))


def fake_computer(service: Service, session_id: str) -> FakeComputer:
    """The FakeComputer the service runs the session on (it records the actions)."""
    computer = service.services.computers.get(session_id)
    assert isinstance(computer, FakeComputer)
    return computer


async def waiting_check(service: Service, sid: str) -> dict[str, Any]:
    """The one pending check, once the session shows the run waiting for it."""
    deadline = time.monotonic() + 10
    while True:
        page = (
            await service.client.get(
                f"/v1/sessions/{sid}/safety-checks", params={"status": "pending"}
            )
        ).json()
        session = (await service.client.get(f"/v1/sessions/{sid}")).json()
        if page["data"] and session["status"] == "awaiting_safety_check":
            (check,) = page["data"]
            return check  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, "the run never waited"
        await asyncio.sleep(0.02)
