"""Session tokens over real HTTP, on a service with API_KEYS.

The matrix: every endpoint of the app x every kind of credential (none, an API key,
another tenant's key, a read token, a control token, another session's token, an
expired one, a revoked one), each with the status it must get. A credential that is
refused changes nothing in the database (no token ever reaches another session or
creates anything). The matrix is checked against `app.routes`, so a new endpoint
cannot be left out of it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.routing import iter_route_contexts
from sqlalchemy import text
from starlette.routing import Mount

from app.db.models import utcnow
from app.main import create_app
from tests.api.helpers import FAKE_COMPUTER
from tests.conftest import Service, ServiceServer, make_settings, wipe
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    computer_call,
    text_message,
    tool_use_message,
)

KEY_A, KEY_B = "key-a", "key-b"
API_KEYS = f"{KEY_A}:tenant-a,{KEY_B}:tenant-b"
OWNER = {"Authorization": f"Bearer {KEY_A}"}

# Credentials. "other" is a token of another session of the same tenant: only the
# session check stands between it and the target.
NONE, KEY, OTHER_KEY = "none", "key", "other_tenant_key"
READ, CONTROL, OTHER, EXPIRED, REVOKED = "read", "control", "other_session", "expired", "revoked"
TOKEN_KINDS = (READ, CONTROL, OTHER, EXPIRED, REVOKED)
KINDS = (NONE, KEY, OTHER_KEY, *TOKEN_KINDS)

# What each access level answers to each credential; "ok" is the endpoint's success.
OK = "ok"
PUBLIC = dict.fromkeys(KINDS, OK)
_INVALID = {NONE: 401, EXPIRED: 401, REVOKED: 401}
READ_ACCESS = _INVALID | {KEY: OK, OTHER_KEY: 404, READ: OK, CONTROL: OK, OTHER: 404}
CONTROL_ACCESS = READ_ACCESS | {READ: 403}
OWNER_ACCESS = CONTROL_ACCESS | {CONTROL: 403}
# Not about one session (create, list): any valid token is beyond its scope.
KEY_ONLY = _INVALID | {KEY: OK, OTHER_KEY: OK, READ: 403, CONTROL: 403, OTHER: 403}


@dataclass
class World:
    """A session `sid` of tenant-a and its tokens, plus another session of the same
    tenant. `busy`: its run waits on a pending safety check; else the run completed."""

    sid: str
    other_sid: str
    run_id: str
    shot_id: str
    check_id: str | None
    tokens: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # the route's path, as app.routes spells it
    access: dict[str, int | str]
    success: int
    busy: bool = False  # needs a run waiting for a decision
    mutates: bool = False  # needs a world of its own
    params: dict[str, str] = field(default_factory=dict)
    body: Callable[[World], Any] | None = None
    names: dict[str, str] = field(default_factory=dict)  # other path parameters
    label: str = ""

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}{self.label}"

    def url(self, world: World) -> str:
        names = {
            "sid": world.sid,
            "rid": world.run_id,
            "cid": world.check_id or "none",
            "shot_id": world.shot_id,
        }
        return self.path.format(**names, **self.names)


S = "/v1/sessions/{sid}"
CALLS = [
    Call("GET", "/healthz", PUBLIC, 200),
    Call("GET", "/readyz", PUBLIC, 200),
    # Open without METRICS_TOKEN (API keys are for tenants, not scrapers): test_metrics.py.
    Call("GET", "/metrics", PUBLIC, 200),
    Call("GET", "/openapi.json", PUBLIC, 200),
    Call("GET", "/docs", PUBLIC, 200),
    Call("GET", "/docs/assets/{name}", PUBLIC, 200, names={"name": "swagger-ui.css"}),
    Call("GET", "/redoc", PUBLIC, 200),
    Call(
        "POST",
        "/v1/sessions",
        KEY_ONLY,
        201,
        mutates=True,
        body=lambda w: {"provider": "anthropic", "computer": FAKE_COMPUTER},
    ),
    Call("GET", "/v1/sessions", KEY_ONLY, 200),
    Call("GET", S, READ_ACCESS, 200),
    Call("DELETE", S, OWNER_ACCESS, 200, busy=True, mutates=True),
    Call("POST", S + "/runs", CONTROL_ACCESS, 202, mutates=True, body=lambda w: {"input": "more"}),
    Call("GET", S + "/runs", READ_ACCESS, 200),
    Call("GET", S + "/runs/{rid}", READ_ACCESS, 200),
    Call("POST", S + "/runs/{rid}/cancel", CONTROL_ACCESS, 202, busy=True, mutates=True),
    Call("POST", S + "/cancel", CONTROL_ACCESS, 202, busy=True, mutates=True),
    Call("GET", S + "/turns", READ_ACCESS, 200),
    Call("GET", S + "/events", READ_ACCESS, 200, params={"follow": "false"}, label=" (SSE)"),
    Call("GET", S + "/events", READ_ACCESS, 200, params={"format": "json"}, label=" (JSON)"),
    Call("GET", S + "/safety-checks", READ_ACCESS, 200),
    Call(
        "POST",
        S + "/safety-checks/{cid}/acknowledge",
        CONTROL_ACCESS,
        200,
        busy=True,
        mutates=True,
    ),
    Call(
        "POST",
        S + "/safety-checks/{cid}/reject",
        CONTROL_ACCESS,
        200,
        busy=True,
        mutates=True,
        body=lambda w: {"reason": "not this one"},
    ),
    Call("GET", S + "/screenshots/{shot_id}", READ_ACCESS, 200),
    Call("GET", S + "/webhook-deliveries", READ_ACCESS, 200),
    Call("POST", S + "/tokens", OWNER_ACCESS, 201, mutates=True, body=lambda w: {"scope": "read"}),
    Call("DELETE", S + "/tokens", OWNER_ACCESS, 204, mutates=True),
    Call("GET", "/viewer/sessions/{sid}", READ_ACCESS, 200),
    Call("GET", "/viewer/assets/{name}", PUBLIC, 200, names={"name": "viewer.js"}),
]
# Mounted apps (static files) are public: they serve no session data.
PUBLIC_MOUNTS: set[str] = set()


def app_endpoints() -> set[tuple[str, str]]:
    """(method, path) of every route of the app, ("MOUNT", path) of a mounted app."""
    app = create_app(make_settings("sqlite+aiosqlite://", "http://127.0.0.1:9"))
    found: set[tuple[str, str]] = set()
    # Routers included in the app are flattened here (app.routes holds them whole).
    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, Mount):
            found.add(("MOUNT", str(route.path)))
            continue
        for method in route.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                found.add((method, str(route.path)))
    return found


def test_the_matrix_covers_every_endpoint() -> None:
    matrix = {(c.method, c.path) for c in CALLS} | {("MOUNT", p) for p in PUBLIC_MOUNTS}
    assert app_endpoints() - matrix == set(), "add the new endpoint to CALLS"
    assert matrix - app_endpoints() == set(), "CALLS names an endpoint the app does not have"


# ---- the service and its worlds ----------------------------------------------------


@pytest.fixture(scope="module")
async def keyed(migrated: str, fake_anthropic: FakeAnthropic) -> AsyncIterator[Service]:
    await wipe(migrated)
    settings = make_settings(migrated, fake_anthropic.base_url, api_keys=API_KEYS)
    async with ServiceServer(settings) as service:
        yield service


async def _events(service: Service, sid: str) -> list[dict[str, Any]]:
    page = await service.client.get(
        f"/v1/sessions/{sid}/events", params={"format": "json", "limit": 1000}, headers=OWNER
    )
    return page.json()["data"]  # type: ignore[no-any-return]


async def _pending_check(service: Service, sid: str) -> str:
    deadline = time.monotonic() + 20
    while True:
        page = await service.client.get(
            f"/v1/sessions/{sid}/safety-checks", params={"status": "pending"}, headers=OWNER
        )
        session = await service.client.get(f"/v1/sessions/{sid}", headers=OWNER)
        if page.json()["data"] and session.json()["status"] == "awaiting_safety_check":
            return page.json()["data"][0]["id"]  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, "the run never waited"
        await asyncio.sleep(0.02)


async def _wait_for_terminal(service: Service, sid: str, rid: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        run = (await service.client.get(f"/v1/sessions/{sid}/runs/{rid}", headers=OWNER)).json()
        if run["status"] in ("completed", "failed", "cancelled"):
            assert run["status"] == "completed", run
            return
        assert time.monotonic() < deadline, f"run still {run['status']}"
        await asyncio.sleep(0.05)


async def make_token(service: Service, sid: str, scope: str = "read", **extra: Any) -> str:
    response = await service.client.post(
        f"/v1/sessions/{sid}/tokens", json={"scope": scope, **extra}, headers=OWNER
    )
    assert response.status_code == 201, response.text
    return response.json()["token"]  # type: ignore[no-any-return]


async def expire(service: Service, token: str) -> None:
    """Move the token's expiry into the past (no waiting for a real ttl)."""
    async with service.services.sessionmaker() as db, db.begin():
        await db.execute(
            text("UPDATE session_tokens SET expires_at = :at WHERE id = :id"),
            {"at": utcnow() - timedelta(seconds=1), "id": token.partition(".")[0]},
        )


async def build_world(service: Service, fake: FakeAnthropic, *, busy: bool) -> World:
    fake.reset()
    screenshot = tool_use_message(computer_call("screenshot"))
    if busy:
        fake.enqueue(screenshot, tool_use_message(computer_call("left_click", coordinate=[5, 6])))
    else:
        fake.enqueue(screenshot, text_message("done"))
    created = await service.client.post(
        "/v1/sessions",
        json={
            "provider": "anthropic",
            "computer": FAKE_COMPUTER,
            "task": "look, then click",
            "safety": {"require_ack_for": ["click"]},
        },
        headers=OWNER,
    )
    assert created.status_code == 201, created.text
    sid, rid = created.json()["id"], created.json()["active_run_id"]
    other = await service.client.post(
        "/v1/sessions", json={"provider": "anthropic", "computer": FAKE_COMPUTER}, headers=OWNER
    )
    check_id = None
    if busy:
        check_id = await _pending_check(service, sid)
    else:
        await _wait_for_terminal(service, sid, rid)
    shots = [
        e["data"]["screenshot"]["id"]
        for e in await _events(service, sid)
        if e["type"] == "tool.result" and e["data"].get("screenshot")
    ]
    world = World(sid, other.json()["id"], rid, shots[0], check_id)
    # Revoked first: revoking revokes every token of the session.
    world.tokens[REVOKED] = await make_token(service, sid, "control")
    revoked = await service.client.delete(f"/v1/sessions/{sid}/tokens", headers=OWNER)
    assert revoked.status_code == 204
    world.tokens[READ] = await make_token(service, sid, "read")
    world.tokens[CONTROL] = await make_token(service, sid, "control")
    world.tokens[EXPIRED] = await make_token(service, sid, "control")
    await expire(service, world.tokens[EXPIRED])
    world.tokens[OTHER] = await make_token(service, world.other_sid, "control")
    return world


async def close_world(service: Service, world: World) -> None:
    for sid in (world.sid, world.other_sid):
        closed = await service.client.delete(f"/v1/sessions/{sid}", headers=OWNER)
        assert closed.status_code == 200, closed.text


@pytest.fixture(scope="module")
async def idle_world(keyed: Service, fake_anthropic: FakeAnthropic) -> World:
    """Shared by the calls that change nothing."""
    return await build_world(keyed, fake_anthropic, busy=False)


async def snapshot(service: Service) -> dict[str, list[tuple[Any, ...]]]:
    """Everything a request could create or change."""
    queries = {
        "sessions": "SELECT id, tenant, status FROM sessions ORDER BY id",
        "runs": "SELECT id, status, cancel_requested FROM runs ORDER BY id",
        "checks": "SELECT id, status, decided_by FROM safety_checks ORDER BY id",
        "tokens": "SELECT id, scope, revoked_at FROM session_tokens ORDER BY id",
        "events": "SELECT session_id, COUNT(*) FROM events GROUP BY session_id ORDER BY 1",
    }
    async with service.services.sessionmaker() as db:
        return {
            name: [tuple(row) for row in await db.execute(text(sql))]
            for name, sql in queries.items()
        }


def deliveries(kind: str, world: World) -> list[tuple[dict[str, str], dict[str, str]]]:
    """(headers, query) ways to present the credential: a token both ways."""
    if kind == NONE:
        return [({}, {})]
    if kind == KEY:
        return [(OWNER, {})]
    if kind == OTHER_KEY:
        return [({"Authorization": f"Bearer {KEY_B}"}, {})]
    token = world.tokens[kind]
    return [({}, {"access_token": token}), ({"Authorization": f"Bearer {token}"}, {})]


async def send(
    service: Service, call: Call, world: World, headers: dict[str, str], query: dict[str, str]
) -> httpx.Response:
    body = call.body(world) if call.body is not None else None
    return await service.client.request(
        call.method,
        call.url(world),
        params=call.params | query,
        headers=headers,
        json=body,
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("call", CALLS, ids=lambda c: c.id)
async def test_token_matrix(
    call: Call,
    kind: str,
    keyed: Service,
    idle_world: World,
    fake_anthropic: FakeAnthropic,
) -> None:
    expected = call.access[kind]
    allowed = expected == OK
    status = call.success if allowed else expected
    own_world = call.mutates or call.busy
    world = await build_world(keyed, fake_anthropic, busy=call.busy) if own_world else idle_world
    try:
        ways = deliveries(kind, world)
        if allowed and call.mutates:
            ways = ways[-1:]  # the second try would find the first one's effect
        for headers, query in ways:
            before = await snapshot(keyed)
            response = await send(keyed, call, world, headers, query)
            assert response.status_code == status, (headers, query, response.text)
            if not allowed:
                assert response.headers["content-type"] == "application/problem+json"
                assert await snapshot(keyed) == before, "a refused request changed something"
            elif not call.mutates:
                assert await snapshot(keyed) == before, "a read changed something"
    finally:
        if own_world:
            await close_world(keyed, world)


# ---- the token itself -------------------------------------------------------------


async def test_token_response_carries_urls_and_stores_only_a_hash(
    keyed: Service, idle_world: World
) -> None:
    before = utcnow()
    response = await keyed.client.post(
        f"/v1/sessions/{idle_world.sid}/tokens", json={"ttl_s": 120}, headers=OWNER
    )
    assert response.status_code == 201
    body = response.json()
    token = body["token"]
    assert set(body) == {"token", "scope", "expires_at", "events_url", "viewer_url"}
    assert body["scope"] == "read"  # the default
    assert body["events_url"] == f"/v1/sessions/{idle_world.sid}/events?access_token={token}"
    assert body["viewer_url"] == f"/viewer/sessions/{idle_world.sid}?access_token={token}"
    expires = parse_time(body["expires_at"])
    assert before + timedelta(seconds=119) <= expires <= utcnow() + timedelta(seconds=121)

    async with keyed.services.sessionmaker() as db:
        stored = [tuple(r) for r in await db.execute(text("SELECT * FROM session_tokens"))]
    assert not any(token in str(value) for row in stored for value in row)
    secret = token.partition(".")[2]
    assert len(secret) >= 43 and not any(secret in str(v) for row in stored for v in row)

    # The events URL works as it is, and is a stream of that session.
    events = await keyed.client.get(body["events_url"] + "&format=json")
    assert events.status_code == 200
    assert {e["session_id"] for e in events.json()["data"]} == {idle_world.sid}


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scope": "admin"}, "scope"),
        ({"ttl_s": 59}, "ttl_s"),
        ({"ttl_s": 86401}, "ttl_s"),
        ({"ttl": 60}, "ttl"),
    ],
)
async def test_token_request_is_validated(
    keyed: Service, idle_world: World, body: dict[str, Any], field: str
) -> None:
    response = await keyed.client.post(
        f"/v1/sessions/{idle_world.sid}/tokens", json=body, headers=OWNER
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == field


async def test_a_token_with_no_body_is_a_read_token_for_an_hour(
    keyed: Service, idle_world: World
) -> None:
    response = await keyed.client.post(f"/v1/sessions/{idle_world.sid}/tokens", headers=OWNER)
    assert response.status_code == 201 and response.json()["scope"] == "read"
    left = parse_time(response.json()["expires_at"]) - utcnow()
    assert timedelta(seconds=3590) < left <= timedelta(seconds=3600)


@pytest.mark.parametrize("forgery", ["garbage", "unknown id", "wrong secret"])
async def test_unknown_tokens_are_401(keyed: Service, idle_world: World, forgery: str) -> None:
    known_id = idle_world.tokens[READ].partition(".")[0]
    forged = {
        "garbage": "garbage",
        "unknown id": "tok_" + "0" * 28 + ".abc",
        "wrong secret": f"{known_id}.not-the-secret",
    }[forgery]
    for response in (
        await keyed.client.get(f"/v1/sessions/{idle_world.sid}", params={"access_token": forged}),
        await keyed.client.get(
            f"/v1/sessions/{idle_world.sid}", headers={"Authorization": f"Bearer {forged}"}
        ),
    ):
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_closing_revokes_control_tokens_but_read_tokens_still_watch(
    keyed: Service, fake_anthropic: FakeAnthropic
) -> None:
    world = await build_world(keyed, fake_anthropic, busy=True)
    read, control = world.tokens[READ], world.tokens[CONTROL]
    closed = await keyed.client.delete(f"/v1/sessions/{world.sid}", headers=OWNER)
    assert closed.status_code == 200

    watched = await keyed.client.get(
        f"/v1/sessions/{world.sid}/events", params={"access_token": read, "format": "json"}
    )
    assert watched.status_code == 200
    assert "session.closed" in [e["type"] for e in watched.json()["data"]]
    refused = await keyed.client.get(
        f"/v1/sessions/{world.sid}", headers={"Authorization": f"Bearer {control}"}
    )
    assert refused.status_code == 401
    assert "revoked" in refused.json()["detail"]
    # A closed session has nothing to control: no new control token either.
    again = await keyed.client.post(
        f"/v1/sessions/{world.sid}/tokens", json={"scope": "control"}, headers=OWNER
    )
    assert again.status_code == 409
    still_readable = await keyed.client.post(
        f"/v1/sessions/{world.sid}/tokens", json={"scope": "read"}, headers=OWNER
    )
    assert still_readable.status_code == 201
    await close_world(keyed, world)


async def test_decided_by_names_the_token_or_the_tenant(
    keyed: Service, fake_anthropic: FakeAnthropic
) -> None:
    world = await build_world(keyed, fake_anthropic, busy=True)
    control = world.tokens[CONTROL]
    acked = await keyed.client.post(
        f"/v1/sessions/{world.sid}/safety-checks/{world.check_id}/acknowledge",
        headers={"Authorization": f"Bearer {control}"},
    )
    assert acked.status_code == 200
    assert acked.json()["decided_by"] == f"token:{control.partition('.')[0]}"
    events = await _events(keyed, world.sid)
    (decision,) = [e for e in events if e["type"] == "safety_check.acknowledged"]
    assert decision["data"]["decided_by"] == acked.json()["decided_by"]
    await close_world(keyed, world)

    world = await build_world(keyed, fake_anthropic, busy=True)
    rejected = await keyed.client.post(
        f"/v1/sessions/{world.sid}/safety-checks/{world.check_id}/reject",
        json={"reason": "no"},
        headers=OWNER,
    )
    assert rejected.status_code == 200 and rejected.json()["decided_by"] == "tenant-a"
    await close_world(keyed, world)


async def test_a_read_token_is_refused_every_control(
    keyed: Service, fake_anthropic: FakeAnthropic
) -> None:
    """What the viewer's buttons would call, with a read token: 403 each, nothing done."""
    world = await build_world(keyed, fake_anthropic, busy=True)
    read = {"access_token": world.tokens[READ]}
    base = f"/v1/sessions/{world.sid}"
    before = await snapshot(keyed)
    for method, path, body in (
        ("POST", f"/safety-checks/{world.check_id}/acknowledge", None),
        ("POST", f"/safety-checks/{world.check_id}/reject", {"reason": "x"}),
        ("POST", "/cancel", None),
        ("POST", f"/runs/{world.run_id}/cancel", None),
        ("POST", "/runs", {"input": "go on"}),
    ):
        response = await keyed.client.request(method, base + path, params=read, json=body)
        assert response.status_code == 403, (path, response.text)
    assert await snapshot(keyed) == before
    await close_world(keyed, world)
