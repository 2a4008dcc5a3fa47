"""Idempotency keys over real HTTP (SPEC v2.3), on SQLite and on Postgres.

The service runs with API_KEYS (two tenants). Besides the real routes, the app of
these tests has one more POST route, `/v1/test/answer/{status}`, which answers with
that status (or raises, or waits for the test to let it go) and counts its calls: the
real routes give no way to ask for a 429, a 5xx or a request that stays in progress
as long as a test needs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from fastapi import Response
from sqlalchemy import text

from app.api.idempotency import IN_PROGRESS_TYPE, REUSED_TYPE
from app.db.models import utcnow
from app.retention import Purger
from tests.api.helpers import FAKE_COMPUTER
from tests.conftest import Service, ServiceServer, make_settings
from tests.fakes.anthropic_server import FakeAnthropic
from tests.processes import POSTGRES_ONLY

KEY_A, KEY_B = "key-a", "key-b"
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"Authorization": f"Bearer {KEY_B}"}
CREATE = {"provider": "anthropic", "computer": FAKE_COMPUTER, "task": "say hi"}


@dataclass
class Answers:
    """The test route's behaviour and what it saw."""

    calls: int = 0
    started: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


def with_test_route(server: ServiceServer, answers: Answers) -> None:
    async def answer(status: int, hold: bool = False, boom: bool = False) -> Response:
        answers.calls += 1
        answers.started.set()
        if hold:
            await answers.release.wait()
        if boom:
            raise RuntimeError("the route failed")
        return Response(f'{{"call": {answers.calls}}}', status, media_type="application/json")

    server.app.add_api_route("/v1/test/answer/{status}", answer, methods=["POST"])


def settings_for(database_url: str, fake: FakeAnthropic, **overrides: Any) -> Any:
    return make_settings(
        database_url,
        fake.base_url,
        api_keys=f"{KEY_A}:tenant-a,{KEY_B}:tenant-b",
        **overrides,
    )


@pytest.fixture
async def answers() -> Answers:
    return Answers()


@pytest.fixture
async def keyed(
    clean_db: str, anthropic_fake: FakeAnthropic, answers: Answers
) -> AsyncIterator[Service]:
    server = ServiceServer(settings_for(clean_db, anthropic_fake))
    with_test_route(server, answers)
    async with server as service:
        yield service


async def count(service: Service, sql: str, **params: Any) -> int:
    async with service.services.sessionmaker() as db:
        return int((await db.execute(text(sql), params)).scalar_one())


async def run_ends(service: Service, sid: str, rid: str) -> None:
    for _ in range(400):
        run = (await service.client.get(f"/v1/sessions/{sid}/runs/{rid}", headers=A)).json()
        if run["status"] in ("completed", "failed", "cancelled"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {rid} did not end")


def post(service: Service, path: str, key: str | None, body: Any = None, **headers: str) -> Any:
    extra = {"Idempotency-Key": key} if key is not None else {}
    return service.client.post(path, json=body, headers=A | extra | headers)


async def test_ten_concurrent_creates_with_one_key_make_one_session(keyed: Service) -> None:
    responses = await asyncio.gather(
        *(post(keyed, "/v1/sessions", "create-1", CREATE) for _ in range(10))
    )
    assert {r.status_code for r in responses} == {201}, [r.text for r in responses]
    assert len({r.content for r in responses}) == 1  # ten identical answers
    replayed = [r.headers.get("Idempotent-Replayed") for r in responses]
    assert replayed.count("true") == 9 and replayed.count(None) == 1
    session = responses[0].json()
    assert await count(keyed, "SELECT COUNT(*) FROM sessions") == 1
    assert await count(keyed, "SELECT COUNT(*) FROM runs") == 1
    await run_ends(keyed, session["id"], session["active_run_id"])
    # Later, a repeat still gets the first answer and still starts nothing.
    again = await post(keyed, "/v1/sessions", "create-1", CREATE)
    assert again.status_code == 201 and again.content == responses[0].content
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["content-type"] == responses[0].headers["content-type"]
    assert await count(keyed, "SELECT COUNT(*) FROM runs") == 1
    # Only the hash of the request is kept, never its body.
    async with keyed.services.sessionmaker() as db:
        (row,) = (await db.execute(text("SELECT * FROM idempotency_keys"))).mappings().all()
    assert "say hi" not in str({k: v for k, v in row.items() if k != "body"})
    assert row["session_id"] == session["id"] and row["status_code"] == 201


async def test_same_key_with_another_request_is_422(keyed: Service) -> None:
    first = await post(keyed, "/v1/sessions", "k", CREATE)
    assert first.status_code == 201
    for path, body in (
        ("/v1/sessions", CREATE | {"task": "something else"}),  # another body
        (f"/v1/sessions/{first.json()['id']}/cancel", None),  # another path
    ):
        reused = await post(keyed, path, "k", body)
        assert reused.status_code == 422, reused.text
        assert reused.headers["content-type"] == "application/problem+json"
        problem = reused.json()
        assert problem["type"].endswith("idempotency-key-reused") and problem["type"] == REUSED_TYPE
        assert problem["errors"][0]["field"] == "Idempotency-Key"
    # The same body spelled differently (key order, spacing) is the same request.
    spelled = await keyed.client.post(
        "/v1/sessions",
        content=b'{ "task": "say hi", "computer": {"display": {"height": 800, "width": 1280},'
        b' "type": "fake"}, "provider": "anthropic" }',
        headers=A | {"Idempotency-Key": "k", "Content-Type": "application/json"},
    )
    assert spelled.status_code == 201 and spelled.headers["Idempotent-Replayed"] == "true"
    assert await count(keyed, "SELECT COUNT(*) FROM sessions") == 1


async def test_an_expired_key_runs_again_and_is_purged(keyed: Service) -> None:
    first = await post(keyed, "/v1/sessions", "old", CREATE)
    assert first.status_code == 201
    async with keyed.services.sessionmaker() as db, db.begin():
        await db.execute(
            text("UPDATE idempotency_keys SET expires_at = :at"),
            {"at": utcnow() - timedelta(seconds=1)},
        )
    second = await post(keyed, "/v1/sessions", "old", CREATE)
    assert second.status_code == 201 and "Idempotent-Replayed" not in second.headers
    assert second.json()["id"] != first.json()["id"]
    assert await count(keyed, "SELECT COUNT(*) FROM sessions") == 2
    # The periodic purge deletes expired keys, and only those.
    other = await post(keyed, "/v1/sessions", "other", CREATE | {"task": "x"})
    assert other.status_code == 201
    async with keyed.services.sessionmaker() as db, db.begin():
        await db.execute(
            text("UPDATE idempotency_keys SET expires_at = :at WHERE key = 'old'"),
            {"at": utcnow() - timedelta(seconds=1)},
        )
    purger = Purger(keyed.services.settings, keyed.services.log)
    assert await purger.purge_once() == (1, 0)
    keys = await count(keyed, "SELECT COUNT(*) FROM idempotency_keys WHERE key = 'other'")
    assert keys == 1 and await count(keyed, "SELECT COUNT(*) FROM idempotency_keys") == 1


async def test_keys_are_per_tenant_and_per_token(keyed: Service) -> None:
    a = await post(keyed, "/v1/sessions", "shared", CREATE)
    b = await keyed.client.post(
        "/v1/sessions", json=CREATE, headers=B | {"Idempotency-Key": "shared"}
    )
    assert a.status_code == b.status_code == 201
    assert "Idempotent-Replayed" not in b.headers and a.json()["id"] != b.json()["id"]
    # A control token's keys are its own: the owner's key "shared" is not the token's.
    sid = a.json()["id"]
    await run_ends(keyed, sid, a.json()["active_run_id"])
    token = (
        await keyed.client.post(f"/v1/sessions/{sid}/tokens", json={"scope": "control"}, headers=A)
    ).json()["token"]
    as_token = {"Authorization": f"Bearer {token}", "Idempotency-Key": "shared"}
    run = await keyed.client.post(
        f"/v1/sessions/{sid}/runs", json={"input": "more"}, headers=as_token
    )
    assert run.status_code == 202, run.text
    replay = await keyed.client.post(
        f"/v1/sessions/{sid}/runs", json={"input": "more"}, headers=as_token
    )
    assert replay.status_code == 202 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == run.json()["id"]
    assert await count(keyed, "SELECT COUNT(*) FROM runs WHERE session_id = :s", s=sid) == 2


async def test_token_answers_are_never_stored(keyed: Service) -> None:
    sid = (await post(keyed, "/v1/sessions", None, {"provider": "anthropic"})).json()["id"]
    tokens = [
        await post(keyed, f"/v1/sessions/{sid}/tokens", "tok", {"scope": "read"}) for _ in range(2)
    ]
    assert [t.status_code for t in tokens] == [201, 201]
    assert tokens[0].json()["token"] != tokens[1].json()["token"]
    assert all("Idempotent-Replayed" not in t.headers for t in tokens)
    assert await count(keyed, "SELECT COUNT(*) FROM idempotency_keys") == 0


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_429_and_5xx_answers_are_not_kept(
    keyed: Service, answers: Answers, status: int
) -> None:
    for call in (1, 2):
        response = await post(keyed, f"/v1/test/answer/{status}", "retry-me")
        assert response.status_code == status and "Idempotent-Replayed" not in response.headers
        assert answers.calls == call  # the retry ran the route again
    assert await count(keyed, "SELECT COUNT(*) FROM idempotency_keys") == 0
    # A 4xx answer is kept like any other.
    for _ in range(2):
        kept = await post(keyed, "/v1/test/answer/404", "kept")
    assert kept.status_code == 404 and kept.headers["Idempotent-Replayed"] == "true"
    assert answers.calls == 3


async def test_an_exception_lets_the_key_go(keyed: Service, answers: Answers) -> None:
    failed = await post(keyed, "/v1/test/answer/200?boom=true", "boom")
    assert failed.status_code == 500
    assert await count(keyed, "SELECT COUNT(*) FROM idempotency_keys") == 0


async def test_a_repeat_waits_for_the_first_then_gets_its_answer(
    keyed: Service, answers: Answers
) -> None:
    first = asyncio.create_task(post(keyed, "/v1/test/answer/201?hold=true", "slow"))
    await asyncio.wait_for(answers.started.wait(), 10)
    repeat = asyncio.create_task(post(keyed, "/v1/test/answer/201?hold=true", "slow"))
    await asyncio.sleep(0.3)  # the repeat is waiting (IDEMPOTENCY_WAIT_S is 5 s)
    assert not repeat.done()
    answers.release.set()
    original, replayed = await first, await repeat
    assert original.status_code == replayed.status_code == 201
    assert replayed.content == original.content == b'{"call": 1}'
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert answers.calls == 1


async def test_a_repeat_while_in_progress_is_409_without_waiting(
    clean_db: str, anthropic_fake: FakeAnthropic, answers: Answers
) -> None:
    server = ServiceServer(settings_for(clean_db, anthropic_fake, idempotency_wait_s=0))
    with_test_route(server, answers)
    async with server as service:
        first = asyncio.create_task(post(service, "/v1/test/answer/200?hold=true", "busy"))
        await asyncio.wait_for(answers.started.wait(), 10)
        busy = await post(service, "/v1/test/answer/200?hold=true", "busy")
        assert busy.status_code == 409, busy.text
        assert busy.json()["type"] == IN_PROGRESS_TYPE and busy.headers["Retry-After"] == "1"
        answers.release.set()
        assert (await first).status_code == 200
        done = await post(service, "/v1/test/answer/200?hold=true", "busy")
        assert done.status_code == 200 and done.headers["Idempotent-Replayed"] == "true"
        assert answers.calls == 1


@pytest.mark.parametrize("key", [b"", b"x" * 256, b"with space", b"tab\tkey", b"caf\xe9"])
async def test_a_bad_key_is_400_naming_the_header(keyed: Service, key: bytes) -> None:
    headers = [(b"Authorization", f"Bearer {KEY_A}".encode()), (b"Idempotency-Key", key)]
    response = await keyed.client.post("/v1/sessions", json=CREATE, headers=headers)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == "Idempotency-Key"
    assert await count(keyed, "SELECT COUNT(*) FROM sessions") == 0


async def test_an_unauthenticated_request_stores_nothing(keyed: Service) -> None:
    response = await keyed.client.post(
        "/v1/sessions", json=CREATE, headers={"Idempotency-Key": "anon"}
    )
    assert response.status_code == 401
    assert await count(keyed, "SELECT COUNT(*) FROM idempotency_keys") == 0


async def test_the_openapi_document_declares_the_header(keyed: Service) -> None:
    paths = (await keyed.client.get("/openapi.json")).json()["paths"]
    create = paths["/v1/sessions"]["post"]
    assert any(p["name"] == "Idempotency-Key" for p in create["parameters"])
    assert "409" in create["responses"] and "422" in create["responses"]
    tokens = paths["/v1/sessions/{sid}/tokens"]["post"]
    assert all(p["name"] != "Idempotency-Key" for p in tokens.get("parameters", []))


@POSTGRES_ONLY
async def test_one_key_holds_across_replicas(clean_db: str, anthropic_fake: FakeAnthropic) -> None:
    """Two replicas on one Postgres, ten concurrent creates with one key split between
    them: one session, one run, ten identical answers."""
    one = ServiceServer(settings_for(clean_db, anthropic_fake, replica_id="replica-1"))
    two = ServiceServer(settings_for(clean_db, anthropic_fake, replica_id="replica-2"))
    async with one as first, two as second:
        responses = await asyncio.gather(
            *(post(service, "/v1/sessions", "across", CREATE) for service in [first, second] * 5)
        )
        assert {r.status_code for r in responses} == {201}, [r.text for r in responses]
        assert len({r.content for r in responses}) == 1
        assert [r.headers.get("Idempotent-Replayed") for r in responses].count(None) == 1
        assert await count(first, "SELECT COUNT(*) FROM sessions") == 1
        assert await count(first, "SELECT COUNT(*) FROM runs") == 1
        session = responses[0].json()
        await run_ends(first, session["id"], session["active_run_id"])


async def test_replays_count_against_the_tenant_request_limit(
    clean_db: str, anthropic_fake: FakeAnthropic, answers: Answers
) -> None:
    """An answer given by the key layer (here, replays) is a request of the tenant like
    any other: TENANT_REQUESTS_PER_S refuses it beyond the limit, and the 429 is not
    kept (the key's stored answer stays)."""
    server = ServiceServer(settings_for(clean_db, anthropic_fake, tenant_requests_per_s=1))
    with_test_route(server, answers)
    async with server as service:
        statuses = [(await post(service, "/v1/test/answer/200", "limited")).status_code]
        for _ in range(5):  # a one-second window: these cannot all fall in new windows
            response = await post(service, "/v1/test/answer/200", "limited")
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert response.headers["Retry-After"] == "1"
                break
        assert 429 in statuses and answers.calls == 1, statuses
        async with service.services.sessionmaker() as db:
            stored = (await db.execute(text("SELECT status_code FROM idempotency_keys"))).all()
        assert stored == [(200,)]
