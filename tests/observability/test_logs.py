"""The log of a real `agent-sessions serve` process (SPEC v2.4), read from its stderr as
an operator's collector would: one JSON object a line; a start-up line naming the
providers that have keys (never a key); request lines with their request id (the one
the answer's X-Request-Id names) and tenant; and a run that fails with
configuration_error is exactly one line, with its session id, run id and error."""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.helpers import FAKE_COMPUTER, wait_for_run
from tests.fakes.anthropic_server import FakeAnthropic
from tests.processes import Launcher, ServiceProcess, service_env

OPENAI_KEY = "sk-test-this-value-never-reaches-the-log"


@pytest.fixture
async def launch(
    clean_db: str, anthropic_fake: FakeAnthropic, tmp_path: Path
) -> AsyncIterator[Launcher]:
    # No Anthropic key: an Anthropic run fails with configuration_error.
    env = service_env(
        clean_db, anthropic_fake.base_url, ANTHROPIC_API_KEY="", OPENAI_API_KEY=OPENAI_KEY
    )
    launcher = Launcher(env, tmp_path)
    try:
        yield launcher
    finally:
        for service in launcher.processes:
            await service.close()
        for service in launcher.processes:  # shown only for a failed test
            print(f"===== {service.log_path.name} (exit {service.proc.returncode}) =====")
            print(service.output())


def json_lines(service: ServiceProcess) -> list[dict[str, Any]]:
    lines = service.output().splitlines()
    assert lines
    parsed = [json.loads(line) for line in lines]  # every line, or this fails
    assert all(isinstance(line, dict) for line in parsed)
    return parsed


async def test_a_failed_run_is_one_json_line_with_its_ids_and_error(launch: Launcher) -> None:
    service = await launch.start()
    created = await service.client.post(
        "/v1/sessions",
        json={"provider": "anthropic", "computer": FAKE_COMPUTER, "task": "Open the page"},
        headers={"X-Request-Id": "caller-req-42"},
    )
    assert created.status_code == 201, created.text
    assert created.headers["X-Request-Id"] == "caller-req-42"
    sid, rid = created.json()["id"], created.json()["active_run_id"]
    run = await wait_for_run(service.client, sid, rid)
    assert run["status"] == "failed" and run["error"]["type"] == "configuration_error"
    generated = (await service.client.get(f"/v1/sessions/{sid}")).headers["X-Request-Id"]
    assert generated.startswith("req_")
    service.send(signal.SIGTERM)
    assert await service.wait_exit(30) == 0

    lines = json_lines(service)
    assert OPENAI_KEY not in service.output()
    (started,) = [line for line in lines if "providers with keys" in line["message"]]
    assert started["providers"] == ["openai"] and started["level"] == "info"

    # The failure: one line, with the session, the run and the error.
    about_run = [line for line in lines if line.get("run_id") == rid]
    (failed,) = [line for line in about_run if "error" in line]
    assert failed["level"] == "error" and failed["event"] == "run.failed"
    assert failed["session_id"] == sid and failed["tenant"] == "default"
    assert failed["error"]["type"] == "configuration_error"
    assert "ANTHROPIC_API_KEY" in failed["error"]["message"]
    assert not [
        line for line in lines if line is not failed and "ANTHROPIC_API_KEY" in json.dumps(line)
    ]
    # Each state change once: queued (by the request), then failed.
    changes = [line["event"] for line in about_run if line.get("event", "").startswith("run.")]
    assert changes == ["run.queued", "run.failed"]

    # The create request's lines carry its id (the caller's), its tenant and its session.
    by_request = [line for line in lines if line.get("request_id") == "caller-req-42"]
    assert {line.get("event") for line in by_request} >= {"session.created", "run.queued"}
    (access,) = [line for line in by_request if line["logger"] == "uvicorn.access"]
    assert (access["method"], access["path"], access["status"]) == ("POST", "/v1/sessions", 201)
    assert access["tenant"] == "default"
    (read,) = [
        line
        for line in lines
        if line.get("request_id") == generated and line["logger"] == "uvicorn.access"
    ]
    assert read["session_id"] == sid and read["path"] == f"/v1/sessions/{sid}"
