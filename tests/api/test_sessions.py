"""Sessions over real HTTP: create, read, list with cursors, close, and bad input."""

from __future__ import annotations

import httpx

from app.db.models import SessionRow
from tests.conftest import Service, ServiceServer, make_settings
from tests.fakes.anthropic_server import FakeAnthropic

FAKE = {"type": "fake", "display": {"width": 1280, "height": 800}}


def assert_problem(response: httpx.Response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["title"] and "Traceback" not in response.text
    if field is not None:
        assert any(e["field"] == field for e in body["errors"]), body
        assert field in body["detail"]
    return body


async def test_create_get_and_close_a_session(service: Service) -> None:
    created = await service.client.post(
        "/v1/sessions",
        json={"provider": "anthropic", "computer": FAKE, "metadata": {"ticket": "OPS-12"}},
    )
    assert created.status_code == 201, created.text
    session = created.json()
    assert session["status"] == "idle"
    assert session["model"] == "claude-sonnet-4-6"
    assert session["metadata"] == {"ticket": "OPS-12"}
    assert session["last_event_seq"] == 1 and session["active_run_id"] is None

    fetched = await service.client.get(f"/v1/sessions/{session['id']}")
    assert fetched.status_code == 200 and fetched.json()["id"] == session["id"]

    closed = await service.client.delete(f"/v1/sessions/{session['id']}")
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    again = await service.client.delete(f"/v1/sessions/{session['id']}")
    assert again.status_code == 200 and again.json()["last_event_seq"] == 2

    events = await service.client.get(f"/v1/sessions/{session['id']}/events?format=json")
    assert [e["type"] for e in events.json()["data"]] == ["session.created", "session.closed"]

    run = await service.client.post(f"/v1/sessions/{session['id']}/runs", json={"input": "hi"})
    assert_problem(run, 409)


async def test_list_sessions_paginates_newest_first(service: Service) -> None:
    ids = []
    for _ in range(5):
        r = await service.client.post(
            "/v1/sessions", json={"provider": "anthropic", "computer": FAKE}
        )
        ids.append(r.json()["id"])
    seen: list[str] = []
    after = None
    while True:
        params = {"limit": 2} | ({"after": after} if after else {})
        page = (await service.client.get("/v1/sessions", params=params)).json()
        seen.extend(s["id"] for s in page["data"])
        if not page["has_more"]:
            break
        after = page["next_after"]
    assert seen == list(reversed(ids))
    idle = (await service.client.get("/v1/sessions", params={"status": "closed"})).json()
    assert idle["data"] == []


async def test_bad_input_gets_problem_json_naming_the_field(service: Service) -> None:
    c = service.client
    assert_problem(await c.post("/v1/sessions", json={"provider": "nope"}), 422, "provider")
    assert_problem(await c.post("/v1/sessions", json={}), 422, "provider")
    assert_problem(
        await c.post("/v1/sessions", json={"provider": "anthropic", "modle": "x"}), 422, "modle"
    )
    assert_problem(
        await c.post("/v1/sessions", json={"provider": "anthropic", "options": {"max_steps": 0}}),
        422,
        "options.max_steps",
    )
    assert_problem(
        await c.post(
            "/v1/sessions", json={"provider": "anthropic", "options": {"tool_version": "computer"}}
        ),
        422,
        "options.tool_version",
    )
    for options, provider in (
        ({"turn_retention": 0}, "anthropic"),
        ({"turn_retention": 5}, "openai"),
    ):
        assert_problem(
            await c.post("/v1/sessions", json={"provider": provider, "options": options}),
            422,
            "options.turn_retention",
        )
    assert_problem(
        await c.post("/v1/sessions", json={"provider": "anthropic", "task": "x" * 100_001}),
        422,
        "task",
    )
    malformed = await c.post(
        "/v1/sessions",
        content=b'{"provider": "anthropic",',
        headers={"content-type": "application/json"},
    )
    assert_problem(malformed, 400)
    huge = await c.post(
        "/v1/sessions",
        content=b'{"provider": "' + b"a" * (2 * 1024 * 1024) + b'"}',
        headers={"content-type": "application/json"},
    )
    assert_problem(huge, 413)
    assert_problem(await c.get("/v1/sessions/ses_missing"), 404)
    assert_problem(await c.get("/v1/sessions", params={"limit": 1000}), 422, "limit")
    assert_problem(await c.get("/v1/sessions/ses_x/events", headers={"Last-Event-ID": "abc"}), 404)
    # Nothing above was persisted.
    assert (await c.get("/v1/sessions")).json()["data"] == []


async def test_tenants_are_isolated(clean_db: str, anthropic_fake: FakeAnthropic) -> None:
    settings = make_settings(clean_db, anthropic_fake.base_url, api_keys="ka:alpha,kb:beta")
    async with ServiceServer(settings) as svc:
        c = svc.client
        assert_problem(await c.get("/v1/sessions"), 401)
        assert_problem(await c.get("/v1/sessions", headers={"Authorization": "Bearer wrong"}), 401)
        a = {"Authorization": "Bearer ka"}
        b = {"Authorization": "Bearer kb"}
        created = await c.post(
            "/v1/sessions", json={"provider": "anthropic", "computer": FAKE}, headers=a
        )
        sid = created.json()["id"]
        assert (await c.get(f"/v1/sessions/{sid}", headers=a)).status_code == 200
        for method, path in [
            ("GET", f"/v1/sessions/{sid}"),
            ("DELETE", f"/v1/sessions/{sid}"),
            ("GET", f"/v1/sessions/{sid}/events?format=json"),
            ("GET", f"/v1/sessions/{sid}/runs"),
            ("POST", f"/v1/sessions/{sid}/cancel"),
        ]:
            assert_problem(await c.request(method, path, headers=b), 404)
        assert (await c.get("/v1/sessions", headers=b)).json()["data"] == []
        assert len((await c.get("/v1/sessions", headers=a)).json()["data"]) == 1
        assert (await c.get("/healthz")).status_code == 200


async def test_input_the_database_or_json_cannot_hold_is_refused(service: Service) -> None:
    c = service.client
    raw = {"content-type": "application/json"}
    for body in (
        b'{"provider": "anthropic", "metadata": {"a": "\\ud800"}}',  # a lone surrogate
        b'{"provider": "anthropic", "metadata": {"a": NaN}}',
        b'{"provider": "anthropic", "metadata": {"a": 1e400}}',
        b'{"provider": "anthropic", "task": "a\\u0000b"}',  # Postgres text refuses NUL
        b'{"provider": "anthropic", "safety": {"safety_check_timeout_s": Infinity}}',
    ):
        response = await c.post("/v1/sessions", content=body, headers=raw)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    for url in ("file:///etc/passwd", "data:text/html,hi", "ws://127.0.0.1:9/x"):
        assert_problem(
            await c.post(
                "/v1/sessions", json={"provider": "anthropic", "computer": {"start_url": url}}
            ),
            422,
            "computer.start_url",
        )
    assert_problem(await c.get("/v1/sessions/%00"), 422, "sid")
    assert_problem(await c.get("/v1/sessions", params={"after": "a\x00"}), 422, "after")
    session = (
        await c.post("/v1/sessions", json={"provider": "anthropic", "computer": FAKE})
    ).json()
    events = f"/v1/sessions/{session['id']}/events"
    assert_problem(
        await c.get(events, params={"after": str(2**64), "format": "json"}), 422, "after"
    )
    assert_problem(await c.get(events, headers={"Last-Event-ID": str(2**64)}), 400)
    # Everything above was refused without leaving a trace; the tenant's list still renders.
    listed = await c.get("/v1/sessions")
    assert listed.status_code == 200 and [s["id"] for s in listed.json()["data"]] == [session["id"]]


async def test_a_cdp_url_is_shown_without_its_credentials(service: Service) -> None:
    """A read token sees the session and its events: the provider key that CDP URLs
    usually carry (userinfo, query) is never shown, while the service keeps it."""
    secret_url = "wss://user:pw@cdp.example.com:8443/devtools/browser/x?apiKey=bb_live_SECRET#f"
    computer = {"type": "cdp", "cdp_url": secret_url}
    response = await service.client.post(
        "/v1/sessions", json={"provider": "anthropic", "computer": computer}
    )
    assert response.status_code == 201, response.text
    sid = response.json()["id"]
    shown = "wss://cdp.example.com:8443/devtools/browser/x"
    assert response.json()["computer"]["cdp_url"] == shown
    assert (await service.client.get(f"/v1/sessions/{sid}")).json()["computer"]["cdp_url"] == shown
    log = await service.client.get(f"/v1/sessions/{sid}/events", params={"format": "json"})
    assert "SECRET" not in log.text and "pw@" not in log.text
    assert log.json()["data"][0]["data"]["computer"]["cdp_url"] == shown
    async with service.services.sessionmaker() as db:
        row = await db.get(SessionRow, sid)
    assert row is not None and row.computer["cdp_url"] == secret_url
