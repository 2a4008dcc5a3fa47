"""A stream opened with a session token lives no longer than the token: revoked or
expired, the open stream ends and its reconnection gets 401 (SPEC v2.2: revocation is
what cuts a leaked viewer link). And a request that can never yield an event gets 204."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from httpx_sse import aconnect_sse
from sqlalchemy import text

import app.api.events as events_api
from app.db.models import utcnow
from tests.api.helpers import create_session
from tests.conftest import Service

RECHECK_S = 0.2


@pytest.fixture(autouse=True)
def fast_recheck(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events_api, "TOKEN_RECHECK_S", RECHECK_S)


async def token_for(service: Service, sid: str) -> str:
    response = await service.client.post(f"/v1/sessions/{sid}/tokens", json={"scope": "read"})
    assert response.status_code == 201, response.text
    return response.json()["token"]  # type: ignore[no-any-return]


async def stream_until_it_ends(service: Service, sid: str, token: str, act: object) -> float:
    """Open a followed stream with the token, run `act` once the stream is open, and
    return how long after `act` the server ended the stream."""
    async with aconnect_sse(
        service.client,
        "GET",
        f"/v1/sessions/{sid}/events",
        params={"access_token": token},
        timeout=30,
    ) as source:
        assert source.response.status_code == 200
        events = source.aiter_sse()
        first = await anext(events)  # the retry line: the stream is open
        assert first.retry is not None
        await act()  # type: ignore[operator]
        started = time.monotonic()
        async with asyncio.timeout(10):
            async for _ in events:  # the session.created event replayed, pings
                pass
        return time.monotonic() - started


async def test_revoking_ends_the_streams_opened_with_the_token(service: Service) -> None:
    sid = (await create_session(service.client))["id"]
    token = await token_for(service, sid)

    async def revoke() -> None:
        response = await service.client.delete(f"/v1/sessions/{sid}/tokens")
        assert response.status_code == 204

    ended_after = await stream_until_it_ends(service, sid, token, revoke)
    assert ended_after < 5  # rechecked every RECHECK_S; without the watch it never ends
    again = await service.client.get(
        f"/v1/sessions/{sid}/events", params={"access_token": token, "follow": "false"}
    )
    assert again.status_code == 401


async def test_a_stream_ends_when_its_token_expires(service: Service) -> None:
    sid = (await create_session(service.client))["id"]
    token = await token_for(service, sid)
    # The token now expires two seconds from now (no waiting for a real ttl of 60 s+).
    async with service.services.sessionmaker() as db, db.begin():
        await db.execute(
            text("UPDATE session_tokens SET expires_at = :at WHERE id = :id"),
            {"at": utcnow() + timedelta(seconds=2), "id": token.partition(".")[0]},
        )

    async def nothing() -> None:
        return None

    ended_after = await stream_until_it_ends(service, sid, token, nothing)
    assert ended_after < 8


async def test_an_api_key_stream_is_not_cut(service: Service) -> None:
    sid = (await create_session(service.client))["id"]
    async with aconnect_sse(service.client, "GET", f"/v1/sessions/{sid}/events") as source:
        events = source.aiter_sse()
        await anext(events)
        with pytest.raises(TimeoutError):  # still open after many rechecks
            async with asyncio.timeout(RECHECK_S * 10):
                async for _ in events:
                    pass


async def test_a_stream_that_does_not_follow_and_is_at_the_end_gets_204(
    service: Service,
) -> None:
    session = await create_session(service.client)
    sid, last = session["id"], session["last_event_seq"]
    at_end = await service.client.get(
        f"/v1/sessions/{sid}/events",
        params={"follow": "false", "after": last},
        headers={"Accept": "text/event-stream"},
    )
    assert at_end.status_code == 204
    before_end = await service.client.get(
        f"/v1/sessions/{sid}/events",
        params={"follow": "false", "after": last - 1},
        headers={"Accept": "text/event-stream"},
    )
    assert before_end.status_code == 200 and f"id: {last}" in before_end.text
