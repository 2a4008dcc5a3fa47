"""API fuzzing: schemathesis against the service's own OpenAPI document (issue 13).

The real service (SQLite, the fake computer, the fake Anthropic server answering
every model call) serves on a loopback port, and the `st` command runs against the
document it serves, so every operation in it is covered, including ones added later.
Two passes: with an API key, and without credentials (API_KEYS is set, so that pass
checks the 401s). Checks: no 5xx (not_a_server_error), every status code, content
type and body as the document says (status_code_conformance,
content_type_conformance, response_schema_conformance).

Bounded for a 2-core machine: coverage and fuzzing phases only (no stateful
sequences), MAX_EXAMPLES per operation, a time budget per pass (WITH_KEY_S,
WITHOUT_KEY_S), one worker. The fuzzer is seeded with real ids (sessions, a run, a
pending safety check, a screenshot) so that half of the generated paths reach real
resources; tests/schemathesis_hooks.py keeps generated runs on the fake computer,
webhooks on loopback and event streams finite (`follow=false`). The number of cases
is printed. Runs once, in the SQLite pass: its subject is the HTTP contract.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.helpers import FAKE_COMPUTER
from tests.conftest import Service, ServiceServer, make_settings
from tests.fakes.anthropic_server import FakeAnthropic, computer_call, tool_use_message
from tests.processes import SQLITE_PASS_ONLY

pytestmark = [SQLITE_PASS_ONLY]

ST = Path(sys.executable).with_name("st")
ROOT = Path(__file__).resolve().parent.parent
KEY = "fuzz-key"
MAX_EXAMPLES = 25
WITH_KEY_S = 75
WITHOUT_KEY_S = 25
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)


@pytest.fixture
async def fuzzed(
    clean_db: str, anthropic_fake: FakeAnthropic, tmp_path: Path
) -> AsyncIterator[Service]:
    # Not strict: every model call the fuzzer causes gets a plain "Done." and ends its run.
    settings = make_settings(
        clean_db,
        anthropic_fake.base_url,
        api_keys=f"{KEY}:fuzz",
        provider_max_retries=0,
        # A generated session without a task keeps its generated computer; should a
        # follow-up run start one, it fails at once instead of launching anything.
        chromium_path=str(tmp_path / "no-chromium"),
        webhook_allow_private=True,  # the hooks point every webhook at loopback
        max_active_runs=4,
    )
    async with ServiceServer(settings) as service:
        yield service


async def seed(service: Service, fake: FakeAnthropic) -> dict[str, list[str]]:
    """Real ids for the fuzzer: a session whose run waits on a safety check (with a
    screenshot stored), and an idle one."""
    fake.enqueue(
        tool_use_message(computer_call("screenshot")),
        tool_use_message(computer_call("left_click", coordinate=[10, 10])),
    )
    auth = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=service.url, headers=auth, timeout=30) as client:
        waiting = await client.post(
            "/v1/sessions",
            json={
                "provider": "anthropic",
                "computer": FAKE_COMPUTER,
                "task": "look, then click",
                "safety": {"require_ack_for": ["click"]},
            },
        )
        assert waiting.status_code == 201, waiting.text
        sid, rid = waiting.json()["id"], waiting.json()["active_run_id"]
        idle = await client.post(
            "/v1/sessions", json={"provider": "anthropic", "computer": FAKE_COMPUTER}
        )
        assert idle.status_code == 201, idle.text
        deadline = time.monotonic() + 20
        while True:
            checks = (await client.get(f"/v1/sessions/{sid}/safety-checks")).json()["data"]
            if checks:
                break
            assert time.monotonic() < deadline, "the seeded run never waited for a human"
            await asyncio.sleep(0.05)
        events = (await client.get(f"/v1/sessions/{sid}/events", params={"format": "json"})).json()
        shots = [
            e["data"]["screenshot"]["id"]
            for e in events["data"]
            if e["type"] == "tool.result" and e["data"].get("screenshot")
        ]
    assert shots, "the seeded run stored no screenshot"
    return {
        "sid": [sid, idle.json()["id"]],
        "rid": [rid],
        "cid": [checks[0]["id"]],
        "shot_id": shots,
    }


def write_config(path: Path, ids: dict[str, list[str]], max_time_s: int) -> None:
    lines = [
        f"max-time = {max_time_s}",
        "workers = 1",
        "[generation]",
        f"max-examples = {MAX_EXAMPLES}",
        "[phases.examples]",
        "enabled = false",
        "[phases.stateful]",
        "enabled = false",
        "[checks]",
        "enabled = false",
        *(f"{check}.enabled = true" for check in CHECKS),
        "[parameters]",
        # Half the time a real id, half the time a generated one (mostly a 404).
        *(f'"path.{name}" = {{ dictionary = "{name}", probability = 0.5 }}' for name in ids),
        *(f"[dictionaries.{name}]\nvalues = {json.dumps(values)}" for name, values in ids.items()),
    ]
    path.write_text("\n".join(lines) + "\n")


async def run_schemathesis(
    service: Service,
    tmp_path: Path,
    name: str,
    ids: dict[str, list[str]],
    max_time_s: int,
    headers: list[str],
) -> dict[str, Any]:
    """One `st run` against the served document; its JSON report (the output on failure)."""
    config = tmp_path / f"{name}.toml"
    report = tmp_path / f"{name}.json"
    output = tmp_path / f"{name}.log"
    write_config(config, ids, max_time_s)
    args = [str(ST), "--no-color", "--config-file", str(config), "run"]
    args += [f"{service.url}/openapi.json", "--report", "json", "--report-json-path", str(report)]
    for header in headers:
        args += ["-H", header]
    env = {
        **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")},
        "PYTHONPATH": str(ROOT),
        "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
    }
    with output.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            *args, stdout=sink, stderr=asyncio.subprocess.STDOUT, env=env, cwd=tmp_path
        )
        try:
            code = await asyncio.wait_for(process.wait(), max_time_s + 60)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    text = output.read_text(errors="replace")
    assert code == 0 and report.exists(), f"schemathesis ({name}) exited {code}:\n{text[-20000:]}"
    result: dict[str, Any] = json.loads(report.read_text())
    result["output"] = text
    return result


async def test_the_api_conforms_to_its_openapi_document_under_fuzzing(
    fuzzed: Service,
    anthropic_fake: FakeAnthropic,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ids = await seed(fuzzed, anthropic_fake)
    document = (await fuzzed.client.get("/openapi.json")).json()
    operations = sum(len(ops) for ops in document["paths"].values())

    with_key = await run_schemathesis(
        fuzzed, tmp_path, "with-key", ids, WITH_KEY_S, [f"Authorization: Bearer {KEY}"]
    )
    without_key = await run_schemathesis(fuzzed, tmp_path, "without-key", ids, WITHOUT_KEY_S, [])

    lines = []
    for name, result in (("with an API key", with_key), ("without credentials", without_key)):
        cases = result["test_cases"]
        assert result["operations"]["tested"] == operations, result["output"][-20000:]
        assert cases["with_failures"] == 0 and cases["errored"] == 0, result["output"][-20000:]
        assert not result["failures"] and not result["errors"], result["output"][-20000:]
        assert cases["generated"] > operations
        lines.append(
            f"schemathesis {name}: {cases['generated']} cases over {operations} operations, "
            f"{cases['with_failures']} failing, {result['running_time']:.0f} s"
        )
    with capsys.disabled():
        print("\n" + "\n".join(lines))
