"""Webhooks end to end (SPEC v2.3): the real service over real HTTP, its runs on the fake
computer against the fake Anthropic server, delivering to a receiver on 127.0.0.1 that
checks every signature with the `standardwebhooks` verifier. SQLite and Postgres.

The receiver is on loopback, so these services set WEBHOOK_ALLOW_PRIVATE, except where
the refusal is the subject."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.api.helpers import create_session, read_stream, wait_for_run
from tests.conftest import Service, ServiceServer, make_settings
from tests.fakes.anthropic_server import FakeAnthropic, computer_call, tool_use_message
from tests.fakes.webhook_receiver import OTHER_SECRET, SECRET, Received, WebhookReceiver

FAST_RETRIES = "0.05,0.05,0.05,0.05"


def webhook_settings(database_url: str, anthropic_url: str, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "webhook_secret": SECRET,
        "webhook_allow_private": True,
        "webhook_retry_delays_s": FAST_RETRIES,
        "webhook_poll_s": 0.2,
    }
    values.update(overrides)
    return make_settings(database_url, anthropic_url, **values)


@pytest.fixture
def receiver() -> AsyncIterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver  # type: ignore[misc]


@pytest.fixture
async def hooked(clean_db: str, anthropic_fake: FakeAnthropic) -> AsyncIterator[Service]:
    async with ServiceServer(webhook_settings(clean_db, anthropic_fake.base_url)) as service:
        yield service


async def received(receiver: WebhookReceiver, count: int, within: float = 20.0) -> list[Received]:
    deadline = time.monotonic() + within
    while len(receiver.snapshot()) < count:
        assert time.monotonic() < deadline, f"{len(receiver.snapshot())} of {count} deliveries"
        await asyncio.sleep(0.02)
    return receiver.snapshot()


async def attempts(service: Service, sid: str, **params: Any) -> list[dict[str, Any]]:
    response = await service.client.get(
        f"/v1/sessions/{sid}/webhook-deliveries", params={"limit": 100, **params}
    )
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def settled(
    service: Service, sid: str, done: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while True:
        listed = await attempts(service, sid)
        if done(listed):
            return listed
        assert time.monotonic() < deadline, f"attempts never settled: {listed}"
        await asyncio.sleep(0.05)


async def test_a_runs_terminal_event_is_delivered_once_signed_as_the_stream_sends_it(
    hooked: Service, receiver: WebhookReceiver
) -> None:
    session = await create_session(hooked.client, task="Look", webhook={"url": receiver.url})
    sid = session["id"]
    assert session["webhook"]["url"] == receiver.url
    assert "run.completed" in session["webhook"]["events"]  # the default events
    await wait_for_run(hooked.client, sid, session["active_run_id"])

    (delivery,) = await received(receiver, 1)
    event = delivery.verify()  # standardwebhooks' verifier: signature and timestamp
    assert event["type"] == "run.completed" and event["session_id"] == sid
    assert delivery.headers["content-type"] == "application/json"
    assert delivery.headers["webhook-id"].startswith("msg_")
    # Byte for byte the `data:` of the event's SSE message.
    stream = await read_stream(hooked.client, sid, params={"follow": "false"})
    assert [e for e in stream if e["seq"] == event["seq"]] == [event]
    sse = await hooked.client.get(f"/v1/sessions/{sid}/events", params={"follow": "false"})
    assert f"data: {delivery.body.decode()}\r\n".encode() in sse.content or (
        f"data: {delivery.body.decode()}\n".encode() in sse.content
    )

    (listed,) = await settled(hooked, sid, lambda rows: len(rows) == 1 and rows[0]["ended_at"])
    assert listed["event_seq"] == event["seq"] and listed["event_type"] == "run.completed"
    assert listed["attempt"] == 1 and listed["status_code"] == 200
    assert listed["outcome"] == "delivered" and listed["error"] is None
    assert listed["webhook_id"] == delivery.headers["webhook-id"]
    await asyncio.sleep(1.0)  # five polls of the worker later: still once
    assert len(receiver.snapshot()) == 1
    assert len(await attempts(hooked, sid)) == 1


async def test_500_three_times_then_200_is_delivered_at_the_fourth_attempt(
    hooked: Service, receiver: WebhookReceiver
) -> None:
    receiver.responder = lambda request, so_far: 500 if len(so_far) <= 3 else 200
    session = await create_session(hooked.client, task="Look", webhook={"url": receiver.url})
    sid = session["id"]

    deliveries = await received(receiver, 4)
    listed = await settled(hooked, sid, lambda rows: any(r["outcome"] == "delivered" for r in rows))
    await asyncio.sleep(0.5)
    assert len(receiver.snapshot()) == 4

    ids = {d.headers["webhook-id"] for d in deliveries}
    assert len(ids) == 1  # one event: the same webhook-id at every attempt
    bodies = {d.body for d in deliveries}
    assert len(bodies) == 1
    for delivery in deliveries:  # every attempt signed afresh, every signature valid
        assert delivery.verify()["type"] == "run.completed"
    assert [(r["attempt"], r["status_code"], r["outcome"]) for r in listed] == [
        (1, 500, "retrying"),
        (2, 500, "retrying"),
        (3, 500, "retrying"),
        (4, 200, "delivered"),
    ]
    assert {r["webhook_id"] for r in listed} == ids
    # Paginated like the other lists.
    first = (
        await hooked.client.get(f"/v1/sessions/{sid}/webhook-deliveries", params={"limit": 3})
    ).json()
    assert first["has_more"] is True and len(first["data"]) == 3
    rest = (
        await hooked.client.get(
            f"/v1/sessions/{sid}/webhook-deliveries",
            params={"limit": 3, "after": first["next_after"]},
        )
    ).json()
    assert rest["has_more"] is False and [r["attempt"] for r in rest["data"]] == [4]


async def test_a_session_s_events_go_in_seq_order_and_wait_for_a_give_up(
    hooked: Service, receiver: WebhookReceiver, anthropic_fake: FakeAnthropic
) -> None:
    """run.started fails at all of its 1 + 4 attempts; only then do the later events go,
    each once, in seq order."""

    def answer(request: Received, so_far: list[Received]) -> int:
        return 503 if request.event["type"] == "run.started" else 200

    receiver.responder = answer
    anthropic_fake.enqueue(
        tool_use_message(computer_call("left_click", coordinate=[10, 20])),
        tool_use_message(computer_call("left_click", coordinate=[30, 40])),
    )
    events = ["run.started", "tool.call", "tool.result", "run.completed"]
    session = await create_session(
        hooked.client, task="Click twice", webhook={"url": receiver.url, "events": events}
    )
    sid = session["id"]
    await wait_for_run(hooked.client, sid, session["active_run_id"])

    deliveries = await received(receiver, 5 + 5)
    await asyncio.sleep(0.5)
    deliveries = receiver.snapshot()
    got = [d.verify() for d in deliveries]
    assert [e["type"] for e in got[:5]] == ["run.started"] * 5
    later = got[5:]
    assert [e["seq"] for e in later] == sorted({e["seq"] for e in later})  # once each, in order
    assert [e["type"] for e in later] == [
        "tool.call",
        "tool.result",
        "tool.call",
        "tool.result",
        "run.completed",
    ]
    listed = await attempts(hooked, sid)
    started = [r for r in listed if r["event_type"] == "run.started"]
    assert [r["outcome"] for r in started] == ["retrying"] * 4 + ["failed"]
    assert all(r["status_code"] == 503 for r in started)
    # Only the chosen event types had an outbox row.
    assert {r["event_type"] for r in listed} == set(events)


async def test_a_redirect_is_not_followed(hooked: Service, receiver: WebhookReceiver) -> None:
    with WebhookReceiver() as elsewhere:
        receiver.responder = lambda request, so_far: (302, elsewhere.url)
        session = await create_session(
            hooked.client, task="Look", webhook={"url": receiver.url, "events": ["run.completed"]}
        )
        sid = session["id"]
        listed = await settled(
            hooked, sid, lambda rows: any(r["outcome"] == "failed" for r in rows)
        )
        assert [(r["status_code"], r["error"]) for r in listed] == [
            (302, "redirect not followed")
        ] * 5
        assert len(receiver.snapshot()) == 5
        assert elsewhere.snapshot() == []


async def test_per_tenant_secrets_sign_each_tenant_s_webhooks(
    clean_db: str, anthropic_fake: FakeAnthropic, receiver: WebhookReceiver
) -> None:
    settings = webhook_settings(
        clean_db,
        anthropic_fake.base_url,
        api_keys="key-a:tenant-a,key-b:tenant-b",
        webhook_secrets=f"tenant-b:{OTHER_SECRET}",
    )
    async with ServiceServer(settings) as service:
        for key in ("key-a", "key-b"):
            service.client.headers["Authorization"] = f"Bearer {key}"
            await create_session(service.client, task="Look", webhook={"url": receiver.url})
        deliveries = await received(receiver, 2)
    by_tenant = {}
    for delivery in deliveries:
        try:
            delivery.verify(OTHER_SECRET)
            by_tenant["tenant-b"] = delivery
        except Exception:
            delivery.verify(SECRET)  # WEBHOOK_SECRET: the tenants WEBHOOK_SECRETS omits
            by_tenant["tenant-a"] = delivery
    assert set(by_tenant) == {"tenant-a", "tenant-b"}


async def test_the_operators_default_url_is_exempt_from_the_address_rule(
    clean_db: str, anthropic_fake: FakeAnthropic, receiver: WebhookReceiver
) -> None:
    settings = webhook_settings(
        clean_db,
        anthropic_fake.base_url,
        webhook_allow_private=False,
        default_webhook_url=receiver.url,
    )
    async with ServiceServer(settings) as service:
        session = await create_session(service.client, task="Look")
        assert session["webhook"] is None  # the session named none
        (delivery,) = await received(receiver, 1)
        assert delivery.verify()["type"] == "run.completed"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hooks",
        "http://localhost/hooks",
        "http://[::1]/hooks",
        "http://10.1.2.3/hooks",
        "http://192.168.0.10/hooks",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.1]/hooks",
    ],
)
async def test_a_private_address_is_refused_at_create(
    clean_db: str, anthropic_fake: FakeAnthropic, url: str
) -> None:
    settings = webhook_settings(clean_db, anthropic_fake.base_url, webhook_allow_private=False)
    async with ServiceServer(settings) as service:
        response = await service.client.post(
            "/v1/sessions",
            json={"provider": "anthropic", "computer": {"type": "fake"}, "webhook": {"url": url}},
        )
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["errors"][0]["field"] == "webhook.url"
        assert "public" in problem["detail"]
        listed = (await service.client.get("/v1/sessions")).json()
        assert listed["data"] == []


async def test_bad_webhooks_get_422_naming_the_field(
    clean_db: str, anthropic_fake: FakeAnthropic
) -> None:
    no_secret = make_settings(clean_db, anthropic_fake.base_url, webhook_allow_private=True)
    async with ServiceServer(no_secret) as service:
        body: dict[str, Any] = {"provider": "anthropic", "computer": {"type": "fake"}}
        cases = [
            ({"url": "ftp://example.com/x"}, "webhook.url"),
            ({"url": "https://user:pw@example.com/x"}, "webhook.url"),
            ({"url": "https://example.com/x", "events": ["run.nope"]}, "webhook.events"),
            ({"url": "https://example.com/x", "events": []}, "webhook.events"),
            ({"url": "https://example.com/x", "extra": 1}, "webhook.extra"),
            # A valid webhook, but no WEBHOOK_SECRET(S): nothing would be signed.
            ({"url": "http://127.0.0.1:9/x"}, "webhook"),
        ]
        for webhook, field in cases:
            response = await service.client.post("/v1/sessions", json=body | {"webhook": webhook})
            assert response.status_code == 422, (webhook, response.text)
            fields = [e["field"] for e in response.json()["errors"]]
            assert field in fields, (webhook, fields)
