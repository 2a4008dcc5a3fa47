"""Retention over real HTTP (SPEC v2.3), on SQLite and on Postgres:
`DELETE /v1/sessions/{sid}?purge=true` deletes a session and everything that refers to
it at once; `RETENTION_DAYS` does it for closed sessions left unchanged that long.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from app.db import repositories as repo
from app.db.models import utcnow
from tests.api.helpers import FAKE_COMPUTER, wait_for_run
from tests.conftest import Service, ServiceServer, make_settings
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    computer_call,
    tool_use_message,
)


async def rows_of(service: Service, sid: str) -> dict[str, int]:
    """How many rows of each table refer to the session (the session row included)."""
    counts: dict[str, int] = {}
    async with service.services.sessionmaker() as db:
        for table, column in repo.session_owned_tables():
            query = f"SELECT COUNT(*) FROM {table.name} WHERE {column.name} = :sid"
            counts[table.name] = int((await db.execute(text(query), {"sid": sid})).scalar_one())
        for name, query in (
            ("sessions", "SELECT COUNT(*) FROM sessions WHERE id = :sid"),
            ("idempotency_keys", "SELECT COUNT(*) FROM idempotency_keys WHERE session_id = :sid"),
        ):
            counts[name] = int((await db.execute(text(query), {"sid": sid})).scalar_one())
    return counts


async def full_session(service: Service, fake: FakeAnthropic) -> str:
    """A session with something in every table: a run with turns and a screenshot, a
    rejected safety check, a token, an answer kept for an idempotency key."""
    fake.enqueue(
        tool_use_message(computer_call("screenshot")),
        tool_use_message(computer_call("left_click", coordinate=[5, 6])),
    )  # the rejection ends the run: no third call
    created = await service.client.post(
        "/v1/sessions",
        json={
            "provider": "anthropic",
            "computer": FAKE_COMPUTER,
            "task": "look, then click",
            "safety": {"require_ack_for": ["click"]},
        },
        headers={"Idempotency-Key": f"create-{time.monotonic_ns()}"},
    )
    assert created.status_code == 201, created.text
    sid, rid = created.json()["id"], created.json()["active_run_id"]
    deadline = time.monotonic() + 20
    while True:
        checks = await service.client.get(
            f"/v1/sessions/{sid}/safety-checks", params={"status": "pending"}
        )
        if checks.json()["data"]:
            break
        assert time.monotonic() < deadline, "the run never waited"
        await asyncio.sleep(0.02)
    check = checks.json()["data"][0]["id"]
    rejected = await service.client.post(
        f"/v1/sessions/{sid}/safety-checks/{check}/reject", json={"reason": "no"}
    )
    assert rejected.status_code == 200, rejected.text
    await wait_for_run(service.client, sid, rid)
    token = await service.client.post(f"/v1/sessions/{sid}/tokens", json={"scope": "read"})
    assert token.status_code == 201
    return sid


async def test_delete_with_purge_removes_the_session_and_everything_it_owns(
    service: Service, anthropic_fake: FakeAnthropic
) -> None:
    sid = await full_session(service, anthropic_fake)
    kept = await full_session(service, anthropic_fake)
    before = await rows_of(service, sid)
    kept_before = await rows_of(service, kept)
    for table in ("events", "runs", "turns", "screenshots", "safety_checks", "session_tokens"):
        assert before[table] > 0, (table, before)
    assert before["idempotency_keys"] == 1

    purged = await service.client.delete(f"/v1/sessions/{sid}", params={"purge": "true"})
    assert purged.status_code == 200, purged.text
    assert purged.json()["id"] == sid and purged.json()["status"] == "closed"
    assert set((await rows_of(service, sid)).values()) == {0}
    assert (await service.client.get(f"/v1/sessions/{sid}")).status_code == 404
    assert (await service.client.get(f"/v1/sessions/{sid}/events")).status_code == 404
    again = await service.client.delete(f"/v1/sessions/{sid}", params={"purge": "true"})
    assert again.status_code == 404
    # Another session is untouched, and a plain DELETE keeps the history.
    assert await rows_of(service, kept) == kept_before
    closed = await service.client.delete(f"/v1/sessions/{kept}")
    assert closed.status_code == 200
    assert (await rows_of(service, kept))["events"] == kept_before["events"] + 1  # closed


async def test_purge_closes_a_busy_session_first(
    service: Service, anthropic_fake: FakeAnthropic
) -> None:
    anthropic_fake.delay_next(30)
    created = await service.client.post(
        "/v1/sessions", json={"provider": "anthropic", "computer": FAKE_COMPUTER, "task": "wait"}
    )
    sid = created.json()["id"]
    await anthropic_fake.wait_for_requests(1, within=10)
    purged = await service.client.delete(f"/v1/sessions/{sid}", params={"purge": "true"})
    assert purged.status_code == 200 and purged.json()["status"] == "closed"
    assert set((await rows_of(service, sid)).values()) == {0}


@pytest.fixture
async def retaining(clean_db: str, anthropic_fake: FakeAnthropic) -> AsyncIterator[Service]:
    settings = make_settings(
        clean_db, anthropic_fake.base_url, retention_days=7, purge_interval_s=0.2
    )
    async with ServiceServer(settings) as service:
        yield service


async def age(service: Service, sid: str, days: float) -> None:
    async with service.services.sessionmaker() as db, db.begin():
        await db.execute(
            text("UPDATE sessions SET updated_at = :at WHERE id = :sid"),
            {"at": utcnow() - timedelta(days=days), "sid": sid},
        )


async def test_retention_days_purges_old_closed_sessions_only(
    retaining: Service, anthropic_fake: FakeAnthropic
) -> None:
    old_closed = await full_session(retaining, anthropic_fake)
    recent_closed = await full_session(retaining, anthropic_fake)
    old_open = await full_session(retaining, anthropic_fake)
    for sid in (old_closed, recent_closed):
        assert (await retaining.client.delete(f"/v1/sessions/{sid}")).status_code == 200
    for sid in (old_closed, old_open):
        await age(retaining, sid, 8)
    await age(retaining, recent_closed, 6)

    deadline = time.monotonic() + 20  # purged within a few PURGE_INTERVAL_S (0.2 s)
    while (await retaining.client.get(f"/v1/sessions/{old_closed}")).status_code != 404:
        assert time.monotonic() < deadline, "the old closed session was not purged"
        await asyncio.sleep(0.1)
    assert set((await rows_of(retaining, old_closed)).values()) == {0}
    for sid in (recent_closed, old_open):
        counts: dict[str, Any] = await rows_of(retaining, sid)
        assert counts["sessions"] == 1 and counts["events"] > 0, (sid, counts)
