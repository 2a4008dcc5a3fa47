"""Per-tenant limits across two real `agent-sessions serve` replicas on one Postgres
database (SPEC v2.3: "for the whole deployment across replicas").

- TENANT_MAX_ACTIVE_RUNS=1: tenant A's four runs, created two on each replica at once,
  run one at a time whichever replica claims them (each waits for a human until it is
  acknowledged), while tenant B's run, created after them all, completes at once.
- TENANT_REQUESTS_PER_S: bursts sent to both replicas at once are counted together:
  in no second does the tenant get more answers than the limit, summed over both.

Postgres only, and marked slow: they run once, in the Postgres pass.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.helpers import FAKE_COMPUTER
from tests.fakes.anthropic_server import FakeAnthropic
from tests.processes import POSTGRES_ONLY, Launcher, ServiceProcess, eventually, service_env

pytestmark = [pytest.mark.slow, POSTGRES_ONLY]

KEYS = "key-a:tenant-a,key-b:tenant-b"
PER_SECOND = 8


@pytest.fixture
async def replicas(
    clean_db: str, anthropic_fake: FakeAnthropic, tmp_path: Path
) -> AsyncIterator[tuple[ServiceProcess, ServiceProcess]]:
    from tests.api.test_tenant_limits import by_task

    anthropic_fake.strict = True
    anthropic_fake.enqueue(*[by_task] * 20)
    env = service_env(
        clean_db,
        anthropic_fake.base_url,
        API_KEYS=KEYS,
        TENANT_MAX_ACTIVE_RUNS="1",
        TENANT_REQUESTS_PER_S=str(PER_SECOND),
        CLAIM_INTERVAL_S="0.2",
    )
    launcher = Launcher(env, tmp_path)
    try:
        first = await launcher.start(REPLICA_ID="replica-1")
        second = await launcher.start(REPLICA_ID="replica-2")
        yield first, second
    finally:
        for service in launcher.processes:
            await service.close()
        for service in launcher.processes:
            print(f"===== {service.log_path.name} (exit {service.proc.returncode}) =====")
            print(service.output())


async def call(
    service: ServiceProcess, key: str, method: str, url: str, **kwargs: Any
) -> httpx.Response:
    """One request as tenant `key`; a 429 is waited out as its Retry-After says."""
    headers = {"Authorization": f"Bearer {key}"}
    while True:
        response = await service.client.request(method, url, headers=headers, **kwargs)
        if response.status_code != 429:
            return response
        await asyncio.sleep(float(response.headers["retry-after"]))


async def start(service: ServiceProcess, key: str, task: str) -> tuple[str, str]:
    body = {
        "provider": "anthropic",
        "computer": FAKE_COMPUTER,
        "task": task,
        "safety": {"require_ack_for": ["click"]},
    }
    created = await call(service, key, "POST", "/v1/sessions", json=body)
    assert created.status_code == 201, created.text
    return created.json()["id"], created.json()["active_run_id"]


async def run_of(service: ServiceProcess, sid: str, rid: str) -> dict[str, Any]:
    response = await call(service, "key-a", "GET", f"/v1/sessions/{sid}/runs/{rid}")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_tenant_limits_hold_across_replicas(
    replicas: tuple[ServiceProcess, ServiceProcess], anthropic_fake: FakeAnthropic
) -> None:
    first, second = replicas
    # Two runs of A on each replica, created at the same moment: both claimers race.
    a_runs = await asyncio.gather(
        *(start(service, "key-a", f"hold {i}") for i, service in enumerate([first, second] * 2))
    )
    quick_sid, quick_rid = await start(second, "key-b", "quick")

    async def quick_done() -> bool:
        run = await call(second, "key-b", "GET", f"/v1/sessions/{quick_sid}/runs/{quick_rid}")
        return bool(run.json()["status"] == "completed")

    await eventually(quick_done, "tenant B's run to complete", within=30)

    finished: list[dict[str, Any]] = []
    while len(finished) < len(a_runs):
        finished.append(await _acknowledge_the_one_active_run(first, second, a_runs))

    # One at a time: each started after the one before it ended.
    for before, after in itertools.pairwise(finished):
        assert after["started_at"] >= before["ended_at"]
    assert anthropic_fake.script_errors == []

    await _requests_are_counted_together(first, second)


async def _acknowledge_the_one_active_run(
    first: ServiceProcess, second: ServiceProcess, a_runs: list[tuple[str, str]]
) -> dict[str, Any]:
    """Wait until exactly one of A's runs waits for its human while the others wait
    queued (or have ended); acknowledge it on the other replica; return it, completed."""
    waiting: list[tuple[str, dict[str, Any]]] = []

    async def one_waits() -> bool:
        runs = [(sid, await run_of(first, sid, rid)) for sid, rid in a_runs]
        waiting[:] = [(sid, r) for sid, r in runs if r["status"] == "awaiting_safety_check"]
        return len(waiting) == 1

    await eventually(one_waits, "one run of tenant A to wait for its human", within=30)
    runs = [await run_of(second, sid, rid) for sid, rid in a_runs]
    active = [r for r in runs if r["status"] in ("running", "awaiting_safety_check")]
    assert len(active) == 1, runs
    assert all(r["status"] in ("queued", "completed") for r in runs if r not in active)
    sid, run = waiting[0]
    page = await call(first, "key-a", "GET", f"/v1/sessions/{sid}/safety-checks")
    (check,) = [c for c in page.json()["data"] if c["status"] == "pending"]
    # Acknowledged through either replica: the run ends, and the next one of A starts.
    url = f"/v1/sessions/{sid}/safety-checks/{check['id']}/acknowledge"
    ack = await call(second, "key-a", "POST", url)
    assert ack.status_code == 200, ack.text

    async def ended() -> bool:
        return (await run_of(first, sid, run["id"]))["status"] == "completed"

    await eventually(ended, "the acknowledged run to complete", within=30)
    return await run_of(first, sid, run["id"])


async def _requests_are_counted_together(first: ServiceProcess, second: ServiceProcess) -> None:
    """Bursts to both replicas at once. The database counts by its clock, which on this
    machine (Postgres on loopback) is this process's: a request that starts and ends
    within one whole second was counted in that second's window."""
    accepted: Counter[int] = Counter()
    sent: Counter[int] = Counter()

    async def one(service: ServiceProcess) -> None:
        before = time.time()
        response = await service.client.get(
            "/v1/sessions", headers={"Authorization": "Bearer key-b"}
        )
        after = time.time()
        assert response.status_code in (200, 429), response.text
        if response.status_code == 429:
            assert response.headers["retry-after"] == "1"
        if int(before) == int(after):
            sent[int(before)] += 1
            accepted[int(before)] += response.status_code == 200

    for _ in range(3):
        await asyncio.gather(*(one(s) for s in [first, second] * PER_SECOND))
        await asyncio.sleep(0.3)
    assert max(sent.values()) > PER_SECOND  # some window got more than the limit...
    assert all(count <= PER_SECOND for count in accepted.values()), (sent, accepted)
