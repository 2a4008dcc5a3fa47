"""The service's own policy checks over real HTTP, on the Anthropic loop: the run
waits for a human, acknowledge / reject / timeout through REST, 409 on a second
decision, and a restart while waiting."""

from __future__ import annotations

from app.computers.base import Click
from tests.api.helpers import (
    create_session,
    fake_computer,
    read_stream,
    types,
    wait_for_event,
    wait_for_run,
    waiting_check,
)
from tests.conftest import Service, ServiceServer, make_settings
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    computer_call,
    text_message,
    tool_use_message,
)


async def test_acknowledge_lets_the_action_run(
    service: Service, strict_fake: FakeAnthropic
) -> None:
    click = computer_call("left_click", coordinate=[50, 60])
    strict_fake.enqueue(tool_use_message(click), text_message("clicked"))
    session = await create_session(
        service.client, task="click it", safety={"require_ack_for": ["click"]}
    )
    sid, rid = session["id"], session["active_run_id"]
    check = await waiting_check(service, sid)
    assert check["code"] == "action_requires_ack" and check["call_id"] == click["id"]
    assert check["provider_check_id"] is None and check["action"]["type"] == "click"
    assert check["status"] == "pending" and check["expires_at"]
    run = (await service.client.get(f"/v1/sessions/{sid}/runs/{rid}")).json()
    assert run["status"] == "awaiting_safety_check"
    assert fake_computer(service, sid).actions == []  # not executed while waiting

    ack = await service.client.post(f"/v1/sessions/{sid}/safety-checks/{check['id']}/acknowledge")
    assert ack.status_code == 200 and ack.json()["status"] == "acknowledged"
    done = await wait_for_run(service.client, sid, rid)
    assert done["status"] == "completed"
    assert fake_computer(service, sid).actions == [Click(x=50, y=60)]

    events = await read_stream(service.client, sid, params={"follow": "false"})
    kinds = types(events)
    order = [
        kinds.index(k)
        for k in (
            "tool.call",
            "safety_check.pending",
            "run.awaiting_safety_check",
            "safety_check.acknowledged",
            "run.resumed",
            "tool.result",
        )
    ]
    assert order == sorted(order)
    again = await service.client.post(f"/v1/sessions/{sid}/safety-checks/{check['id']}/acknowledge")
    assert again.status_code == 409
    reject_late = await service.client.post(
        f"/v1/sessions/{sid}/safety-checks/{check['id']}/reject", json={"reason": "too late"}
    )
    assert reject_late.status_code == 409


async def test_reject_cancels_the_run_and_tells_the_model(
    service: Service, strict_fake: FakeAnthropic
) -> None:
    click = computer_call("left_click", coordinate=[1, 2])
    strict_fake.enqueue(tool_use_message(click))
    session = await create_session(
        service.client, task="buy it", safety={"require_ack_for": ["click"]}
    )
    sid, rid = session["id"], session["active_run_id"]
    check = await waiting_check(service, sid)
    missing_reason = await service.client.post(
        f"/v1/sessions/{sid}/safety-checks/{check['id']}/reject", json={}
    )
    assert missing_reason.status_code == 422
    rejected = await service.client.post(
        f"/v1/sessions/{sid}/safety-checks/{check['id']}/reject", json={"reason": "too risky"}
    )
    assert rejected.status_code == 200 and rejected.json()["reason"] == "too risky"
    run = await wait_for_run(service.client, sid, rid)
    assert run["status"] == "cancelled" and run["stop_reason"] == "safety_check_rejected"
    assert fake_computer(service, sid).actions == []
    assert (await service.client.get(f"/v1/sessions/{sid}")).json()["status"] == "idle"

    strict_fake.enqueue(text_message("understood"))
    follow = await service.client.post(f"/v1/sessions/{sid}/runs", json={"input": "never mind"})
    assert (await wait_for_run(service.client, sid, follow.json()["id"]))["status"] == "completed"
    results = [
        b
        for m in strict_fake.last_request.body["messages"]
        for b in m["content"]
        if isinstance(b, dict) and b.get("type") == "tool_result"
    ]
    assert results[-1]["tool_use_id"] == click["id"] and results[-1]["is_error"] is True
    assert results[-1]["content"][0]["text"] == "Rejected by a human: too risky"
    assert strict_fake.script_errors == []


async def test_an_unanswered_check_times_out(service: Service, strict_fake: FakeAnthropic) -> None:
    strict_fake.enqueue(tool_use_message(computer_call("type", text="secret")))
    session = await create_session(
        service.client,
        task="type",
        safety={"require_ack_for": ["type"], "safety_check_timeout_s": 0.5},
    )
    sid, rid = session["id"], session["active_run_id"]
    run = await wait_for_run(service.client, sid, rid, within=10)
    assert run["status"] == "cancelled" and run["stop_reason"] == "safety_check_timeout"
    (check,) = (await service.client.get(f"/v1/sessions/{sid}/safety-checks")).json()["data"]
    assert check["status"] == "expired"
    assert (
        await service.client.post(f"/v1/sessions/{sid}/safety-checks/{check['id']}/acknowledge")
    ).status_code == 409
    assert fake_computer(service, sid).actions == []
    strict_fake.enqueue(text_message("ok"))
    follow = await service.client.post(f"/v1/sessions/{sid}/runs", json={"input": "go on"})
    assert (await wait_for_run(service.client, sid, follow.json()["id"]))["status"] == "completed"


async def test_a_page_outside_allowed_domains_needs_acknowledgment(
    service: Service, strict_fake: FakeAnthropic
) -> None:
    strict_fake.enqueue(
        tool_use_message(computer_call("left_click", coordinate=[9, 9])), text_message("ok")
    )
    computer = {"type": "fake", "start_url": "https://elsewhere.test/page"}
    session = await create_session(
        service.client, task="x", computer=computer, safety={"allowed_domains": ["example.com"]}
    )
    check = await waiting_check(service, session["id"])
    assert check["code"] == "domain_not_allowed" and "elsewhere.test" in check["message"]
    await service.client.post(
        f"/v1/sessions/{session['id']}/safety-checks/{check['id']}/acknowledge"
    )
    assert (await wait_for_run(service.client, session["id"], session["active_run_id"]))[
        "status"
    ] == "completed"


async def test_a_restart_keeps_the_run_waiting(clean_db: str, strict_fake: FakeAnthropic) -> None:
    settings = make_settings(clean_db, strict_fake.base_url)
    click = computer_call("left_click", coordinate=[7, 8])
    strict_fake.enqueue(tool_use_message(click), text_message("after restart"))
    async with ServiceServer(settings) as first:
        session = await create_session(
            first.client, task="t", safety={"require_ack_for": ["click"]}
        )
        sid, rid = session["id"], session["active_run_id"]
        check = await waiting_check(first, sid)
    async with ServiceServer(settings) as second:
        await wait_for_event(second.client, sid, "run.resumed")
        again = await waiting_check(second, sid)
        assert again["id"] == check["id"]  # the same check, not a new one
        ack = await second.client.post(
            f"/v1/sessions/{sid}/safety-checks/{check['id']}/acknowledge"
        )
        assert ack.status_code == 200
        run = await wait_for_run(second.client, sid, rid)
        assert run["status"] == "completed" and run["output"] == "after restart"
        assert fake_computer(second, sid).actions == [Click(x=7, y=8)]


async def test_bad_safety_options_are_rejected(service: Service) -> None:
    bad = await service.client.post(
        "/v1/sessions", json={"provider": "anthropic", "safety": {"require_ack_for": ["explode"]}}
    )
    assert bad.status_code == 422 and "safety.require_ack_for" in bad.json()["detail"]
    bad_domain = await service.client.post(
        "/v1/sessions",
        json={"provider": "anthropic", "safety": {"allowed_domains": ["not a domain"]}},
    )
    assert bad_domain.status_code == 422
    missing = await service.client.post("/v1/sessions/ses_nope/safety-checks/sc_nope/acknowledge")
    assert missing.status_code == 404
