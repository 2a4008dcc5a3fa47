"""CORS over real HTTP (SPEC v2.2): preflights from an allowed origin are answered with
the methods and headers a browser client needs, whatever API_KEYS says; other origins
get no CORS headers; answers expose the headers a client reads; with no
CORS_ALLOW_ORIGINS nothing is allowed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.settings import Settings
from tests.conftest import Service, ServiceServer, make_settings
from tests.fakes.anthropic_server import FakeAnthropic

APP_ORIGIN = "https://app.example"
EVENTS = "/v1/sessions/ses_000000000000000000000000/events"


@pytest.fixture
async def cors_service(clean_db: str, anthropic_fake: FakeAnthropic) -> AsyncIterator[Service]:
    settings = make_settings(
        clean_db,
        anthropic_fake.base_url,
        api_keys="key-a:tenant-a",
        # Two origins, spaced and with a trailing slash, as people paste them.
        cors_allow_origins=f" {APP_ORIGIN}/ , https://other.example",
    )
    async with ServiceServer(settings) as service:
        yield service


def preflight(origin: str, method: str, headers: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


def listed(value: str) -> set[str]:
    return {item.strip().lower() for item in value.split(",")}


async def test_preflight_from_an_allowed_origin(cors_service: Service) -> None:
    # EventSource's reconnect and a fetch with a key: no credential on the preflight itself.
    response = await cors_service.client.options(
        EVENTS, headers=preflight(APP_ORIGIN, "GET", "authorization, last-event-id")
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "origin" in listed(response.headers["vary"])
    allowed = listed(response.headers["access-control-allow-headers"])
    assert {"authorization", "content-type", "idempotency-key", "last-event-id"} <= allowed
    assert {"GET", "POST", "DELETE"} <= {
        m.upper() for m in listed(response.headers["access-control-allow-methods"])
    }
    assert int(response.headers["access-control-max-age"]) > 0

    post = await cors_service.client.options(
        "/v1/sessions/ses_x/safety-checks/chk_x/acknowledge",
        headers=preflight("https://other.example", "POST", "content-type, idempotency-key"),
    )
    assert post.status_code == 200
    assert post.headers["access-control-allow-origin"] == "https://other.example"


@pytest.mark.parametrize(
    ("origin", "method", "headers"),
    [
        ("https://evil.example", "GET", "authorization"),
        ("http://app.example", "GET", "authorization"),  # another scheme is another origin
        (APP_ORIGIN, "PUT", "authorization"),
        (APP_ORIGIN, "GET", "x-custom"),
    ],
)
async def test_preflight_refused(
    cors_service: Service, origin: str, method: str, headers: str
) -> None:
    response = await cors_service.client.options(EVENTS, headers=preflight(origin, method, headers))
    assert response.status_code == 400
    if origin != APP_ORIGIN:
        assert "access-control-allow-origin" not in response.headers


async def test_answers_expose_the_headers_clients_read(cors_service: Service) -> None:
    # An error answer too: a page must be able to read why it was refused.
    refused = await cors_service.client.get(EVENTS, headers={"Origin": APP_ORIGIN})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == APP_ORIGIN
    exposed = listed(refused.headers["access-control-expose-headers"])
    assert {"idempotent-replayed", "retry-after"} <= exposed
    assert "access-control-allow-credentials" not in refused.headers  # no cookies involved

    ok = await cors_service.client.get("/healthz", headers={"Origin": APP_ORIGIN})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == APP_ORIGIN

    other = await cors_service.client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert other.status_code == 200  # the browser, not the service, withholds the answer
    assert "access-control-allow-origin" not in other.headers


async def test_no_origins_by_default(service: Service) -> None:
    assert Settings.model_fields["cors_allow_origins"].default == ""
    response = await service.client.options(
        EVENTS, headers=preflight(APP_ORIGIN, "GET", "authorization")
    )
    assert response.status_code != 200
    assert "access-control-allow-origin" not in response.headers
    answer = await service.client.get("/healthz", headers={"Origin": APP_ORIGIN})
    assert "access-control-allow-origin" not in answer.headers


def test_origins_are_parsed() -> None:
    settings = Settings(cors_allow_origins="https://a.example/, http://localhost:5173,,")
    assert settings.cors_origins == ["https://a.example", "http://localhost:5173"]
    assert Settings(cors_allow_origins="").cors_origins == []
