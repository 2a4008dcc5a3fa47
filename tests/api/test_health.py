"""/healthz and /readyz: readiness bodies carry the replica's id (SPEC v2.1), 200 and 503 alike."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.db.engine import create_engine
from tests.conftest import Service, ServiceServer, make_settings
from tests.fakes.anthropic_server import FakeAnthropic

REPLICA = "replica-under-test"


@pytest.fixture
async def named_service(clean_db: str, anthropic_fake: FakeAnthropic) -> AsyncIterator[Service]:
    settings = make_settings(clean_db, anthropic_fake.base_url, replica_id=REPLICA)
    async with ServiceServer(settings) as service:
        yield service


async def test_healthz_is_ok(named_service: Service) -> None:
    response = await named_service.client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_readyz_names_the_replica_when_ready(named_service: Service) -> None:
    response = await named_service.client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "replica": REPLICA, "detail": None}


async def test_readyz_is_503_with_the_replica_while_draining(named_service: Service) -> None:
    services = named_service.services
    services.shutting_down = True
    try:
        response = await named_service.client.get("/readyz")
    finally:
        services.shutting_down = False
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "replica": REPLICA,
        "detail": "shutting down",
    }


async def test_readyz_is_503_with_the_replica_when_the_database_is_down(
    named_service: Service,
) -> None:
    services = named_service.services
    engine = services.engine
    # Nothing listens on port 1: every connection is refused at once.
    services.engine = create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    try:
        response = await named_service.client.get("/readyz")
    finally:
        await services.engine.dispose()
        services.engine = engine
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["replica"] == REPLICA
    assert body["detail"].startswith("database unreachable")
    # The service is ready again once its database is back.
    assert (await named_service.client.get("/readyz")).status_code == 200
