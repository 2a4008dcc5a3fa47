"""`GET /v1/sessions?metadata.KEY=VALUE` (SPEC v2.3) over real HTTP, on SQLite and
Postgres: exact match on the value as a string, every filter must match, with the
other filters and the cursor, within the caller's tenant only."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Service, ServiceServer, make_settings
from tests.fakes.anthropic_server import FakeAnthropic

A = {"Authorization": "Bearer key-a"}
B = {"Authorization": "Bearer key-b"}


async def create(service: Service, metadata: dict[str, Any], headers: dict[str, str] = A) -> str:
    response = await service.client.post(
        "/v1/sessions", json={"provider": "anthropic", "metadata": metadata}, headers=headers
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]  # type: ignore[no-any-return]


async def listed(service: Service, params: Any, headers: dict[str, str] = A) -> list[str]:
    response = await service.client.get("/v1/sessions", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return [s["id"] for s in response.json()["data"]]


async def test_metadata_filters(clean_db: str, anthropic_fake: FakeAnthropic) -> None:
    settings = make_settings(clean_db, anthropic_fake.base_url, api_keys="key-a:a,key-b:b")
    async with ServiceServer(settings) as service:
        ops = await create(service, {"team": "ops", "n": 5, "flag": True, 'odd.key "q"': "v"})
        ops2 = await create(service, {"team": "ops", "n": "5", "ratio": 2.5})
        dev = await create(service, {"team": "dev", "nested": {"a": 1}, "nothing": None})
        await create(service, {"team": "ops"}, headers=B)  # another tenant's

        assert await listed(service, {"metadata.team": "ops"}) == [ops2, ops]
        # A number or a boolean matches its JSON spelling; a string only itself.
        assert await listed(service, {"metadata.n": "5"}) == [ops2, ops]
        assert await listed(service, {"metadata.flag": "true"}) == [ops]
        assert await listed(service, {"metadata.flag": "True"}) == []
        assert await listed(service, {"metadata.ratio": "2.5"}) == [ops2]
        # Null, objects and arrays never match; neither does a missing key.
        assert await listed(service, {"metadata.nothing": "null"}) == []
        assert await listed(service, {"metadata.nested": '{"a": 1}'}) == []
        assert await listed(service, {"metadata.nested": '{"a":1}'}) == []
        assert await listed(service, {"metadata.missing": "x"}) == []
        # A key is looked up as it is (dots, quotes), never parsed as a path.
        assert await listed(service, {'metadata.odd.key "q"': "v"}) == [ops]
        assert await listed(service, {"metadata.odd": "v"}) == []
        # Every filter must match, and they combine with status and the cursor.
        assert await listed(service, [("metadata.team", "ops"), ("metadata.flag", "true")]) == [ops]
        assert await listed(service, [("metadata.team", "ops"), ("metadata.team", "dev")]) == []
        assert await listed(service, {"metadata.team": "dev", "status": "idle"}) == [dev]
        assert await listed(service, {"metadata.team": "dev", "status": "closed"}) == []
        page = (
            await service.client.get(
                "/v1/sessions", params={"metadata.team": "ops", "limit": 1}, headers=A
            )
        ).json()
        assert [s["id"] for s in page["data"]] == [ops2] and page["has_more"]
        rest = await listed(
            service, {"metadata.team": "ops", "limit": 1, "after": page["next_after"]}
        )
        assert rest == [ops]
        # The other tenant sees only its own.
        assert len(await listed(service, {"metadata.team": "ops"}, headers=B)) == 1


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"metadata.": "x"}, "metadata."),
        ({"metadata.k": "x" * 1001}, "metadata.k"),
        ([(f"metadata.k{i}", "v") for i in range(21)], "metadata"),
    ],
)
async def test_bad_metadata_filters_are_422_naming_the_field(
    service: Service, params: Any, field: str
) -> None:
    response = await service.client.get("/v1/sessions", params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == field
