"""Several real `agent-sessions serve` replicas on one Postgres database (SPEC v2.1).

Each test starts two replicas as subprocesses (their own process groups, stopped by pid
at teardown), drives them over HTTP with the strict fake Anthropic server of this test
process and the fake computer, and kills, stops or terminates one of them:

- a stream on B of a run A executes is live and closes at the run's end; a cancel sent to
  B stops A's run within 1 s; B, started while A's run is inside a model call, never
  touches that run (the strict fake would refuse a repeated request);
- SIGKILL of the owner during a model call or during an action: B takes the run over
  within LEASE_TTL_S + 5 s, nothing committed is lost, no action runs twice;
- SIGSTOP of the owner past its lease, then SIGCONT: B continued the run; A's late
  writes are refused and it stops the run (fencing), the log stays gapless;
- SIGTERM of the owner: B continues the run within 2 s of the lease's release;
- every backend of the database terminated (pg_terminate_backend) mid-run: the
  replicas reconnect, the LISTEN bridge comes back, streams catch up, the run completes.

Postgres only, and marked slow: they run once, in the Postgres pass.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse
from sqlalchemy import text

from app.agents.anthropic_transcript import INTERRUPTED
from app.db.engine import create_engine
from tests.api.helpers import assert_gapless, create_session, types, wait_for_run
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    RecordedRequest,
    Responder,
    computer_call,
    text_message,
    tool_use_message,
)
from tests.processes import (
    POSTGRES_ONLY,
    Launcher,
    ServiceProcess,
    all_events,
    eventually,
    service_env,
)

pytestmark = [pytest.mark.slow, POSTGRES_ONLY]

LEASE_TTL_S = 3.0
LONG_S = 30.0


@pytest.fixture
async def replicas(
    clean_db: str, anthropic_fake: FakeAnthropic, tmp_path: Path
) -> AsyncIterator[Launcher]:
    anthropic_fake.strict = True  # a request sent twice finds no scripted reply: it fails
    env = service_env(
        clean_db,
        anthropic_fake.base_url,
        PROVIDER_MAX_RETRIES="0",
        SHUTDOWN_GRACE_S="2",
        LEASE_TTL_S=str(LEASE_TTL_S),
        LEASE_RENEW_S="0.5",
        CLAIM_INTERVAL_S="0.2",
    )
    launcher = Launcher(env, tmp_path)
    try:
        yield launcher
    finally:
        for service in launcher.processes:
            if service.proc.poll() is None:
                service.send(signal.SIGCONT)  # a stopped process cannot die of SIGKILL's group
            await service.close()
        for service in launcher.processes:
            print(f"===== {service.log_path.name} (exit {service.proc.returncode}) =====")
            print(service.output())


async def last_seq(client: httpx.AsyncClient, sid: str) -> int:
    response = await client.get(f"/v1/sessions/{sid}")
    assert response.status_code == 200, response.text
    return int(response.json()["last_event_seq"])


async def follow(
    client: httpx.AsyncClient, sid: str, after: int, first: asyncio.Event | None = None
) -> list[dict[str, Any]]:
    """Every event after `after` from one SSE connection, until the server closes it at
    the run's end; `first` is set when the first one arrives."""
    events: list[dict[str, Any]] = []
    async with aconnect_sse(
        client,
        "GET",
        f"/v1/sessions/{sid}/events",
        params={"until": "run_end"},
        headers={"Last-Event-ID": str(after)},
        timeout=httpx.Timeout(10, read=60),
    ) as source:
        async for sse in source.aiter_sse():
            if sse.data:
                events.append(json.loads(sse.data))
                if first is not None:
                    first.set()
    return events


def gated(reply: dict[str, Any], gate: threading.Event) -> Responder:
    """A scripted reply held back until `gate` is set (checked in the fake's own loop)."""

    async def respond(_request: RecordedRequest) -> dict[str, Any]:
        await asyncio.to_thread(gate.wait, LONG_S)
        return reply

    return respond


def click() -> dict[str, Any]:
    """A left click with a tool_use id of its own."""
    return computer_call("left_click", coordinate=[10, 20])


def at(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["created_at"])


def resumed_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The run.resumed events of a new owner (not those after a safety check)."""
    return [
        e
        for e in events
        if e["type"] == "run.resumed" and e["data"]["reason"] != "safety_check_acknowledged"
    ]


async def in_model_call(fake: FakeAnthropic, requests: int) -> None:
    await fake.wait_for_requests(requests, within=30)


# ---- live events and commands across replicas ------------------------------------------------


async def test_a_stream_on_b_is_live_and_a_cancel_on_b_stops_the_run_on_a(
    replicas: Launcher, anthropic_fake: FakeAnthropic
) -> None:
    gate = threading.Event()
    anthropic_fake.enqueue(gated(tool_use_message(click()), gate))
    anthropic_fake.enqueue(tool_use_message(click()))
    anthropic_fake.enqueue(text_message("never delivered"), delay=LONG_S)

    a = await replicas.start(REPLICA_ID="replica-a")
    session = await create_session(a.client, task="click twice")
    sid, rid = session["id"], session["active_run_id"]
    await in_model_call(anthropic_fake, 1)  # held until B streams
    b = await replicas.start(REPLICA_ID="replica-b")

    # The stream replays the newest event, then tails: once that one has arrived, every
    # later event can only come live, from A's commits through B's LISTEN bridge.
    opened_after = await last_seq(b.client, sid) - 1
    attached = asyncio.Event()
    stream = asyncio.create_task(follow(b.client, sid, opened_after, attached))
    await asyncio.wait_for(attached.wait(), 10)
    gate.set()
    await in_model_call(anthropic_fake, 3)  # A is inside the third (held) model call

    async def b_saw_the_second_click() -> bool:
        return types(await all_events(b.client, sid)).count("tool.call") == 2

    await eventually(b_saw_the_second_click, "the second step's events")
    # B has been up through several claim intervals: it never touched A's run.
    assert len(anthropic_fake.requests) == 3

    started = time.monotonic()
    response = await b.client.post(f"/v1/sessions/{sid}/runs/{rid}/cancel")
    elapsed = time.monotonic() - started
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "cancelled"
    assert elapsed < 1.0, f"cancel through B took {elapsed:.2f} s"

    live = await asyncio.wait_for(stream, 20)
    log = await all_events(a.client, sid)
    assert_gapless(log)
    # Everything appended by A after the stream opened reached B's stream, in order, once.
    assert live == [e for e in log if e["seq"] > opened_after]
    assert types(live).count("tool.call") == 2 and types(live)[-1] == "run.cancelled"
    started_event = next(e for e in log if e["type"] == "run.started")
    assert started_event["data"]["replica"] == "replica-a"
    assert len(anthropic_fake.requests) == 3 and anthropic_fake.script_errors == []


# ---- takeover after SIGKILL --------------------------------------------------------------------


@pytest.mark.parametrize("where", ["model_call", "action"])
async def test_sigkill_of_the_owner_hands_the_run_to_another_replica(
    replicas: Launcher, anthropic_fake: FakeAnthropic, where: str
) -> None:
    anthropic_fake.enqueue(tool_use_message(click()))
    if where == "model_call":
        anthropic_fake.enqueue(text_message("lost with the process"), delay=LONG_S)
        anthropic_fake.enqueue(text_message("Done on B."))
    else:
        anthropic_fake.enqueue(tool_use_message(computer_call("wait", duration=20)))
        anthropic_fake.enqueue(text_message("Done on B."))

    a = await replicas.start(REPLICA_ID="replica-a")
    session = await create_session(a.client, task="click, then finish")
    sid, rid = session["id"], session["active_run_id"]
    b = await replicas.start(REPLICA_ID="replica-b")
    if where == "model_call":
        await in_model_call(anthropic_fake, 2)
    else:

        async def waiting() -> bool:  # the wait's intent record is committed: it runs
            return types(await all_events(b.client, sid)).count("tool.call") == 2

        await eventually(waiting, "the wait action to start")
    before = await all_events(b.client, sid)
    a.kill()
    killed_at = datetime.now(UTC)  # the clock the replicas stamp events with (this machine's)

    run = await wait_for_run(b.client, sid, rid, within=LEASE_TTL_S + 30)
    after = await all_events(b.client, sid)
    resumed = resumed_events(after)
    assert len(resumed) == 1, types(after)
    assert resumed[0]["data"] == {"reason": "takeover", "replica": "replica-b"}
    assert (at(resumed[0]) - killed_at).total_seconds() < LEASE_TTL_S + 5
    assert after[: len(before)] == before
    assert_gapless(after)
    assert run["status"] == "completed" and run["output"] == "Done on B."
    tail = after[len(before) :]
    assert "tool.call" not in types(tail)  # nothing was run again
    if where == "action":
        # The interrupted wait is answered with an error, never executed a second time.
        (answer,) = [e["data"] for e in tail if e["type"] == "tool.result"]
        assert answer["is_error"] is True and answer["error"] == INTERRUPTED
    assert anthropic_fake.script_errors == []


# ---- fencing after SIGSTOP ---------------------------------------------------------------------


async def test_a_stopped_owner_is_fenced_out_when_it_wakes(
    replicas: Launcher, anthropic_fake: FakeAnthropic
) -> None:
    # A receives this reply only after it is woken, long after B took the run over
    # (held until then: however long B takes to start on a loaded machine).
    gate = threading.Event()
    anthropic_fake.enqueue(gated(tool_use_message(click()), gate))
    anthropic_fake.enqueue(tool_use_message(click()))  # B's repeat of that model call
    anthropic_fake.enqueue(text_message("Done on B."))

    a = await replicas.start(REPLICA_ID="replica-a")
    session = await create_session(a.client, task="click once")
    sid, rid = session["id"], session["active_run_id"]
    b = await replicas.start(REPLICA_ID="replica-b")
    await in_model_call(anthropic_fake, 1)
    a.send(signal.SIGSTOP)
    run = await wait_for_run(b.client, sid, rid, within=LEASE_TTL_S + 30)
    assert run["status"] == "completed", run
    gate.set()
    a.send(signal.SIGCONT)

    async def a_gave_up() -> bool:
        return "stopped here: another replica holds it" in a.output()

    await eventually(a_gave_up, "A to notice it lost the lease", within=20)
    log = await all_events(b.client, sid)
    assert_gapless(log)
    assert [e["data"]["replica"] for e in resumed_events(log)] == ["replica-b"]
    # One click, by B: A's reply (a click) arrived after it lost the lease and was dropped.
    assert types(log).count("tool.call") == 1
    assert types(log)[-1] == "run.completed" and types(log).count("run.completed") == 1
    assert (await a.client.get("/readyz")).status_code == 200  # A serves on
    await asyncio.sleep(1.0)
    assert await all_events(b.client, sid) == log  # and writes nothing late
    assert anthropic_fake.script_errors == []


# ---- hand-off on SIGTERM -----------------------------------------------------------------------


async def test_sigterm_hands_the_run_over_within_two_seconds(
    replicas: Launcher, anthropic_fake: FakeAnthropic
) -> None:
    gate = threading.Event()
    anthropic_fake.enqueue(tool_use_message(click()))
    anthropic_fake.enqueue(gated(tool_use_message(click()), gate))  # answered during the drain
    anthropic_fake.enqueue(text_message("Done on B."))

    a = await replicas.start(REPLICA_ID="replica-a")
    session = await create_session(a.client, task="click twice")
    sid, rid = session["id"], session["active_run_id"]
    b = await replicas.start(REPLICA_ID="replica-b")
    await in_model_call(anthropic_fake, 2)
    a.send(signal.SIGTERM)
    await asyncio.sleep(0.3)
    gate.set()  # the call in flight completes within the grace, and so does its action
    assert await a.wait_exit(within=20) == 0

    run = await wait_for_run(b.client, sid, rid, within=20)
    log = await all_events(b.client, sid)
    assert_gapless(log)
    resumed = resumed_events(log)
    assert [e["data"] for e in resumed] == [{"reason": "handoff", "replica": "replica-b"}]
    handed_over_after = log[log.index(resumed[0]) - 1]
    assert (at(resumed[0]) - at(handed_over_after)).total_seconds() < 2.0
    assert run["status"] == "completed" and types(log).count("tool.call") == 2
    assert anthropic_fake.script_errors == []


# ---- the database's connections cut ----------------------------------------------------------


async def terminate_backends(database_url: str) -> int:
    """pg_terminate_backend on every other connection to the test's database."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return len(
                (
                    await conn.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                        )
                    )
                ).all()
            )
    finally:
        await engine.dispose()


async def test_cut_connections_are_re_established_and_streams_catch_up(
    replicas: Launcher, anthropic_fake: FakeAnthropic, clean_db: str
) -> None:
    anthropic_fake.enqueue(tool_use_message(click()))
    anthropic_fake.enqueue(tool_use_message(click()), delay=2.0)
    anthropic_fake.enqueue(text_message("Done despite the cut."), delay=1.0)

    a = await replicas.start(REPLICA_ID="replica-a")
    session = await create_session(a.client, task="click twice")
    sid, rid = session["id"], session["active_run_id"]
    b = await replicas.start(REPLICA_ID="replica-b")
    await in_model_call(anthropic_fake, 2)
    # Opened one event back, so its replay proves the stream open before the cut.
    opened_after = await last_seq(b.client, sid) - 1
    opened = asyncio.Event()
    stream = asyncio.create_task(follow(b.client, sid, opened_after, opened))
    await asyncio.wait_for(opened.wait(), 10)
    assert await terminate_backends(clean_db) >= 2  # pools and both LISTEN connections

    async def ready(service: ServiceProcess) -> bool:
        return (await service.client.get("/readyz")).status_code == 200

    run = await wait_for_run(b.client, sid, rid, within=40)
    for service in (a, b):
        await eventually(lambda service=service: ready(service), "the LISTEN bridge back")
    live = await asyncio.wait_for(stream, 20)
    log = await all_events(b.client, sid)
    assert_gapless(log)
    assert live == [e for e in log if e["seq"] > opened_after]
    assert run["status"] in ("completed", "failed"), run
    if run["status"] == "failed":  # a write cut mid-commit fails the run, clearly
        assert run["error"]["message"], run
    assert anthropic_fake.script_errors == []


# ---- a decision on B, a kill between a model reply and its action ----------------------------


async def pending_check(client: httpx.AsyncClient, sid: str) -> dict[str, Any]:
    async def one() -> bool:
        response = await client.get(
            f"/v1/sessions/{sid}/safety-checks", params={"status": "pending"}
        )
        return len(response.json()["data"]) == 1

    await eventually(one, "a pending safety check")
    response = await client.get(f"/v1/sessions/{sid}/safety-checks", params={"status": "pending"})
    return response.json()["data"][0]  # type: ignore[no-any-return]


async def test_decisions_on_b_reach_a_and_a_kill_between_reply_and_action_runs_it_once(
    replicas: Launcher, anthropic_fake: FakeAnthropic
) -> None:
    anthropic_fake.enqueue(tool_use_message(click()))
    anthropic_fake.enqueue(tool_use_message(click()))
    anthropic_fake.enqueue(text_message("Done on B."))
    safety = {"require_ack_for": ["click"]}

    a = await replicas.start(REPLICA_ID="replica-a")
    session = await create_session(a.client, task="click twice", safety=safety)
    sid, rid = session["id"], session["active_run_id"]
    b = await replicas.start(REPLICA_ID="replica-b")

    # A waits for a human; the acknowledgment is given on B and reaches A at once (the
    # bridge's "decided" command, not A's periodic re-read every 2 s).
    check = await pending_check(b.client, sid)
    acked = time.monotonic()
    response = await b.client.post(f"/v1/sessions/{sid}/safety-checks/{check['id']}/acknowledge")
    assert response.status_code == 200, response.text

    async def first_click_done() -> bool:
        return types(await all_events(b.client, sid)).count("tool.result") == 1

    await eventually(first_click_done, "the first click")
    assert time.monotonic() - acked < 1.5

    # The second click waits for its check: between the model's reply and the action.
    second = await pending_check(b.client, sid)
    before = await all_events(b.client, sid)
    a.kill()
    killed_at = datetime.now(UTC)

    async def taken_over() -> bool:
        return bool(resumed_events(await all_events(b.client, sid)))

    await eventually(taken_over, "B to take the run over", within=LEASE_TTL_S + 10)
    response = await b.client.post(f"/v1/sessions/{sid}/safety-checks/{second['id']}/acknowledge")
    assert response.status_code == 200, response.text
    run = await wait_for_run(b.client, sid, rid, within=20)
    log = await all_events(b.client, sid)
    assert log[: len(before)] == before
    assert_gapless(log)
    resumed = resumed_events(log)
    assert [e["data"] for e in resumed] == [{"reason": "takeover", "replica": "replica-b"}]
    assert (at(resumed[0]) - killed_at).total_seconds() < LEASE_TTL_S + 5
    assert run["status"] == "completed" and run["output"] == "Done on B."
    # Each click ran once: its intent record and its result, once each.
    assert types(log).count("tool.call") == 2 and types(log).count("tool.result") == 2
    assert len(anthropic_fake.requests) == 3 and anthropic_fake.script_errors == []


# ---- commands racing on two replicas ------------------------------------------------------------


async def test_runs_created_at_once_on_two_replicas_give_one_run_and_one_conflict(
    replicas: Launcher, anthropic_fake: FakeAnthropic
) -> None:
    a = await replicas.start(REPLICA_ID="replica-a")
    b = await replicas.start(REPLICA_ID="replica-b")
    anthropic_fake.strict = False  # every run just answers with the default text
    sessions = [(await create_session(a.client))["id"] for _ in range(10)]
    for sid in sessions:  # each session idle: its first run (none here) ended
        assert (await a.client.get(f"/v1/sessions/{sid}")).json()["status"] == "idle"
    # Each run that gets in stays in its model call to the end of the test: a run
    # that had already ended would rightly let the other request start a second one.
    for _ in sessions:
        anthropic_fake.enqueue(text_message("held"), delay=LONG_S)

    async def create(client: httpx.AsyncClient, sid: str) -> int:
        response = await client.post(f"/v1/sessions/{sid}/runs", json={"input": "go"})
        return response.status_code

    for sid in sessions:
        codes = await asyncio.gather(create(a.client, sid), create(b.client, sid))
        assert sorted(codes) == [202, 409], codes
        runs = (await b.client.get(f"/v1/sessions/{sid}/runs")).json()["data"]
        assert len(runs) == 1


async def test_a_cancel_for_a_dead_owners_run_is_concluded_by_the_receiver(
    replicas: Launcher, anthropic_fake: FakeAnthropic
) -> None:
    anthropic_fake.enqueue(tool_use_message(click()))
    anthropic_fake.enqueue(text_message("lost with the process"), delay=LONG_S)

    # B takes no runs (and so does not take this one over): every slot is busy there.
    a = await replicas.start(REPLICA_ID="replica-a")
    session = await create_session(a.client, task="click, then wait")
    sid, rid = session["id"], session["active_run_id"]
    await in_model_call(anthropic_fake, 2)
    b = await replicas.start(REPLICA_ID="replica-b", CLAIM_INTERVAL_S="600")
    a.kill()
    started = time.monotonic()
    response = await b.client.post(f"/v1/sessions/{sid}/runs/{rid}/cancel")
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    # Concluded once the dead owner's lease lapsed, not after the give-up deadline.
    assert time.monotonic() - started < LEASE_TTL_S + 3
    log = await all_events(b.client, sid)
    assert_gapless(log)
    cancelled = log[-1]
    assert cancelled["type"] == "run.cancelled"
    first_call = next(e for e in log if e["type"] == "tool.call")
    assert cancelled["data"]["last_action_executed"]["call_id"] == first_call["data"]["call_id"]
    assert (await b.client.get(f"/v1/sessions/{sid}")).json()["status"] == "idle"
