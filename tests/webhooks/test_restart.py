"""The receiver is down while the service restarts: nothing is lost. Real `agent-sessions
serve` processes on one database (SQLite or Postgres), the receiver on a port chosen
first and started only after the service was stopped."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.helpers import create_session, wait_for_run
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.webhook_receiver import SECRET, WebhookReceiver
from tests.processes import Launcher, eventually, service_env

pytestmark = pytest.mark.slow

SESSIONS = 3


@pytest.fixture
async def launch(
    clean_db: str, anthropic_fake: FakeAnthropic, tmp_path: Path
) -> AsyncIterator[Launcher]:
    env = service_env(
        clean_db,
        anthropic_fake.base_url,
        WEBHOOK_SECRET=SECRET,
        WEBHOOK_ALLOW_PRIVATE="true",
        # Retried a little after each failure, long enough to be down across the restart.
        WEBHOOK_RETRY_DELAYS_S="0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3",
        WEBHOOK_POLL_S="0.2",
        SHUTDOWN_GRACE_S="2",
        REPLICA_ID="webhook-replica",
    )
    launcher = Launcher(env, tmp_path)
    try:
        yield launcher
    finally:
        for service in launcher.processes:
            await service.close()
        for service in launcher.processes:
            print(f"===== {service.log_path.name} (exit {service.proc.returncode}) =====")
            print(service.output())


async def test_nothing_is_lost_when_the_receiver_is_down_across_a_restart(
    launch: Launcher,
) -> None:
    receiver = WebhookReceiver().bind()  # its port, taken; nothing listens there yet
    url = receiver.url
    first = await launch.start()
    sessions: list[dict[str, Any]] = []
    for _ in range(SESSIONS):
        session = await create_session(first.client, task="Look", webhook={"url": url})
        sessions.append(session)
    for session in sessions:
        await wait_for_run(first.client, session["id"], session["active_run_id"])

    async def refused_at_least_once() -> bool:
        for session in sessions:
            page = (
                await first.client.get(f"/v1/sessions/{session['id']}/webhook-deliveries")
            ).json()
            if not any((a["error"] or "").startswith("connection failed") for a in page["data"]):
                return False
        return True

    await eventually(refused_at_least_once, "failed attempts while the receiver is down")
    first.send(signal.SIGTERM)
    assert await first.wait_exit(20) == 0

    receiver.start()
    try:
        second = await launch.start()

        async def all_delivered() -> bool:
            types = {(e["session_id"], e["type"]) for e in receiver.events()}
            return types == {(s["id"], "run.completed") for s in sessions}

        await eventually(all_delivered, "every run.completed delivered after the restart", 30)
        for request in receiver.snapshot():
            assert request.verify()["type"] == "run.completed"
        for session in sessions:
            page = (
                await second.client.get(f"/v1/sessions/{session['id']}/webhook-deliveries")
            ).json()
            outcomes = [a["outcome"] for a in page["data"]]
            assert outcomes[-1] == "delivered" and "retrying" in outcomes[:-1]
            assert len({a["webhook_id"] for a in page["data"]}) == 1
    finally:
        receiver.stop()
