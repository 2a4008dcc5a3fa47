"""Per-tenant limits (SPEC v2.3) in one service process, over real HTTP, on SQLite and
on Postgres (the claim query and the request counter run in the database either way;
tests/test_tenant_limits_replicas.py runs them across two real replicas).

- TENANT_MAX_ACTIVE_RUNS: tenant A at its limit (its run waits for a human) leaves
  tenant B's runs unaffected; A's next run, queued before B's, stays queued while B's
  completes, and starts once A's first run ends.
- TENANT_REQUESTS_PER_S: beyond it a tenant gets 429 problem+json with Retry-After,
  another tenant does not, and after Retry-After the tenant is served again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from app.tenant_limits import TenantRequestLimiter
from tests.api.helpers import FAKE_COMPUTER, wait_for_run
from tests.conftest import Service, ServiceServer, make_settings
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    RecordedRequest,
    computer_call,
    text_message,
    tool_use_message,
)

KEYS = "key-a:tenant-a,key-b:tenant-b"


def by_task(request: RecordedRequest) -> dict[str, Any]:
    """The fake's answer for any session: a task starting with "hold" clicks first (the
    session's policy makes the click wait for a human); every other reply finishes."""
    messages = request.body["messages"]
    task = next(b["text"] for b in messages[0]["content"] if b["type"] == "text")
    answered = any(b["type"] == "tool_result" for b in messages[-1]["content"])
    if task.startswith("hold") and not answered:
        return tool_use_message(computer_call("left_click", coordinate=[10, 10]))
    return text_message(f"done: {task}")


def client_for(service: Service, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=service.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


async def start(client: httpx.AsyncClient, task: str) -> tuple[str, str]:
    body = {
        "provider": "anthropic",
        "computer": FAKE_COMPUTER,
        "task": task,
        "safety": {"require_ack_for": ["click"]},
    }
    created = await client.post("/v1/sessions", json=body)
    assert created.status_code == 201, created.text
    return created.json()["id"], created.json()["active_run_id"]


async def pending_check(client: httpx.AsyncClient, sid: str, within: float = 20) -> str:
    deadline = time.monotonic() + within
    while True:
        page = await client.get(f"/v1/sessions/{sid}/safety-checks", params={"status": "pending"})
        assert page.status_code == 200, page.text
        if page.json()["data"]:
            return str(page.json()["data"][0]["id"])
        assert time.monotonic() < deadline, "the run never waited for a human"
        await asyncio.sleep(0.05)


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


@pytest.fixture
async def limited(
    clean_db: str, anthropic_fake: FakeAnthropic
) -> AsyncIterator[tuple[Service, httpx.AsyncClient, httpx.AsyncClient]]:
    anthropic_fake.strict = True
    anthropic_fake.enqueue(*[by_task] * 12)
    settings = make_settings(
        clean_db, anthropic_fake.base_url, api_keys=KEYS, tenant_max_active_runs=1
    )
    async with ServiceServer(settings) as service:
        async with client_for(service, "key-a") as a, client_for(service, "key-b") as b:
            yield service, a, b


async def test_a_tenant_at_its_limit_leaves_other_tenants_unaffected(
    limited: tuple[Service, httpx.AsyncClient, httpx.AsyncClient], anthropic_fake: FakeAnthropic
) -> None:
    service, a, b = limited
    first_sid, first_rid = await start(a, "hold 1")
    first_check = await pending_check(a, first_sid)  # A's one active run waits for a human
    second_sid, second_rid = await start(a, "hold 2")
    quick_sid, quick_rid = await start(b, "quick")

    # B's run, queued after A's second, is claimed and completes; A's second stays queued.
    quick = await wait_for_run(b, quick_sid, quick_rid)
    assert quick["status"] == "completed" and quick["output_json"] is None
    second = (await a.get(f"/v1/sessions/{second_sid}/runs/{second_rid}")).json()
    assert second["status"] == "queued" and second["started_at"] is None
    assert at(quick["created_at"]) > at(second["created_at"])
    assert service.services.runner.active_count == 1  # only A's first: room was left

    # A's first run ends; its second is claimed then, and runs (waiting for its own check).
    ack = await a.post(f"/v1/sessions/{first_sid}/safety-checks/{first_check}/acknowledge")
    assert ack.status_code == 200, ack.text
    first = await wait_for_run(a, first_sid, first_rid)
    assert first["status"] == "completed"
    second_check = await pending_check(a, second_sid)
    ack = await a.post(f"/v1/sessions/{second_sid}/safety-checks/{second_check}/acknowledge")
    assert ack.status_code == 200, ack.text
    second = await wait_for_run(a, second_sid, second_rid)
    assert second["status"] == "completed"
    assert at(second["started_at"]) >= at(first["ended_at"])
    assert anthropic_fake.script_errors == []


@pytest.fixture
async def rate_limited(
    clean_db: str, anthropic_fake: FakeAnthropic
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    settings = make_settings(
        clean_db, anthropic_fake.base_url, api_keys=KEYS, tenant_requests_per_s=3
    )
    async with ServiceServer(settings) as service:
        async with client_for(service, "key-a") as a, client_for(service, "key-b") as b:
            yield a, b


async def test_over_the_request_rate_a_tenant_gets_429_with_retry_after(
    rate_limited: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    a, b = rate_limited
    # 15 requests at once: whatever windows they fall in, at most 3 fit in each.
    answers = await asyncio.gather(*(a.get("/v1/sessions") for _ in range(15)))
    refused = [r for r in answers if r.status_code == 429]
    assert refused and all(r.status_code in (200, 429) for r in answers)
    for response in refused:
        assert response.headers["retry-after"] == "1"
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["status"] == 429 and "3 requests per second" in problem["detail"]
    # Another tenant is unaffected, in the same second.
    assert (await b.get("/v1/sessions")).status_code == 200
    # Every route with a caller counts: a POST too.
    await asyncio.gather(*(a.get("/v1/sessions") for _ in range(5)))
    created = await a.post("/v1/sessions", json={"provider": "anthropic"})
    if created.status_code != 429:  # the burst's window may have just ended: try again
        await asyncio.gather(*(a.get("/v1/sessions") for _ in range(5)))
        created = await a.post("/v1/sessions", json={"provider": "anthropic"})
    assert created.status_code == 429 and created.headers["retry-after"] == "1"
    # After Retry-After, the tenant is served again.
    await asyncio.sleep(float(created.headers["retry-after"]) + 0.1)
    assert (await a.get("/v1/sessions")).status_code == 200


async def test_in_process_windows_count_per_tenant_and_start_over_each_second() -> None:
    now = [100.2]
    limiter = TenantRequestLimiter(2, None, shared=False, clock=lambda: now[0])  # type: ignore[arg-type]
    assert [await limiter.admit("a") for _ in range(3)] == [True, True, False]
    assert await limiter.admit("b")
    now[0] = 100.9
    assert not await limiter.admit("a")
    now[0] = 101.0  # a new window
    assert [await limiter.admit("a") for _ in range(3)] == [True, True, False]
    unlimited = TenantRequestLimiter(None, None, shared=False)  # type: ignore[arg-type]
    assert all([await unlimited.admit("a") for _ in range(100)])
