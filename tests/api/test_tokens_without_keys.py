"""Session tokens on a service without API_KEYS: issued all the same, every request is
allowed, and a token presented is still checked (scope, revocation)."""

from __future__ import annotations

from tests.api.helpers import FAKE_COMPUTER
from tests.conftest import Service


async def test_tokens_work_without_api_keys(service: Service) -> None:
    created = await service.client.post(
        "/v1/sessions", json={"provider": "anthropic", "computer": FAKE_COMPUTER}
    )
    sid = created.json()["id"]
    issued = await service.client.post(f"/v1/sessions/{sid}/tokens", json={"scope": "read"})
    assert issued.status_code == 201
    token = issued.json()["token"]
    assert (
        await service.client.get(issued.json()["events_url"] + "&format=json")
    ).status_code == 200
    assert (await service.client.post(f"/v1/sessions/{sid}/cancel")).status_code == 409
    with_read = await service.client.post(
        f"/v1/sessions/{sid}/cancel", params={"access_token": token}
    )
    assert with_read.status_code == 403
    assert (
        await service.client.post("/v1/sessions", json={}, params={"access_token": token})
    ).status_code == 403
    # A header that is not a token is ignored without keys, as before.
    assert (
        await service.client.get(f"/v1/sessions/{sid}", headers={"Authorization": "Bearer x"})
    ).status_code == 200
    assert (await service.client.delete(f"/v1/sessions/{sid}/tokens")).status_code == 204
    revoked = await service.client.get(f"/v1/sessions/{sid}", params={"access_token": token})
    assert revoked.status_code == 401
