"""The service as a real process, killed or stopped mid-run and started again on the same database.

Each test runs `agent-sessions serve` as a subprocess (the console script, with its own
migrations and uvicorn signal handling), talks to it over HTTP only, and checks the spec's
"Restart" and "Shutdown" promises across two processes:

- SIGKILL during a model call: nothing committed is lost or rewritten, the run emits
  `run.resumed`, repeats the lost model call and completes, seq stays gapless.
- SIGKILL during an action (a real browser): the in-flight action is not run again; the
  model gets an error tool_result saying it was interrupted, with a fresh screenshot; the
  browser is re-created at the last recorded page URL.
- SIGTERM: open streams are ended by the server, the process exits 0 soon after the
  grace period, the run is left `running` (resumable) and completes after a restart.
- A run that cannot be resumed ends `failed` with a clear error.

The fake Anthropic server runs in a thread of this test process; the subprocess reaches it
through ANTHROPIC_BASE_URL. At teardown every process is SIGKILLed with its process group
(the service and Playwright's driver; Chromium, in a group of its own, exits as soon as its
pipe to the driver closes) and its output is printed: pytest shows it only for a failed test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse
from sqlalchemy import text

from app.agents.anthropic_transcript import INTERRUPTED
from app.db.engine import create_engine
from tests.api.helpers import FAKE_COMPUTER, assert_gapless, create_session, types, wait_for_run
from tests.browser_support import require_chromium
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    computer_call,
    text_message,
    tool_use_message,
)
from tests.processes import Launcher, all_events, eventually, free_port, service_env

pytestmark = pytest.mark.slow

GRACE_S = 2.0
# Longer than any test waits, so a held reply only ever ends by the client going away.
LONG_S = 30.0


@pytest.fixture
def strict_fake(anthropic_fake: FakeAnthropic) -> FakeAnthropic:
    # Strict: an unscripted extra model call (an action or a request repeated once too
    # often) fails loudly instead of getting a default reply.
    anthropic_fake.strict = True
    return anthropic_fake


@pytest.fixture
async def launch(
    clean_db: str, strict_fake: FakeAnthropic, tmp_path: Path
) -> AsyncIterator[Launcher]:
    env = service_env(
        clean_db,
        strict_fake.base_url,
        PROVIDER_MAX_RETRIES="2",
        PROVIDER_BACKOFF_INITIAL_S="0.05",
        PROVIDER_BACKOFF_MAX_S="0.2",
        SHUTDOWN_GRACE_S=str(GRACE_S),
        REPLICA_ID="restarted-replica",  # the same replica, restarted: no lease to wait out
    )
    launcher = Launcher(env, tmp_path)
    try:
        yield launcher
    finally:
        for service in launcher.processes:
            await service.close()
        # Captured output of a teardown is shown only for a failed test.
        for service in launcher.processes:
            print(f"===== {service.log_path.name} (exit {service.proc.returncode}) =====")
            print(service.output())
        strict_fake.strict = False


# ---- reading the service ---------------------------------------------------------------------


async def run_row(database_url: str, run_id: str) -> tuple[str, int]:
    """(status, terminal events) of a run, read from the database while no service runs."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            status = (
                await conn.execute(text("SELECT status FROM runs WHERE id = :id"), {"id": run_id})
            ).scalar_one()
            terminal = (
                await conn.execute(
                    text(
                        "SELECT count(*) FROM events WHERE run_id = :id AND type IN "
                        "('run.completed', 'run.failed', 'run.cancelled')"
                    ),
                    {"id": run_id},
                )
            ).scalar_one()
    finally:
        await engine.dispose()
    return str(status), int(terminal)


def tool_results(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """tool_use_id -> tool_result block, over every message of a request body."""
    return {
        block["tool_use_id"]: block
        for message in body["messages"]
        if isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") == "tool_result"
    }


def events_of(events: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == type_]


# ---- 1. SIGKILL during a model call -------------------------------------------------------------


async def test_sigkill_during_a_model_call_keeps_every_event_and_resumes(
    launch: Launcher, strict_fake: FakeAnthropic
) -> None:
    click = computer_call("left_click", coordinate=[10, 20])
    strict_fake.enqueue(tool_use_message(click))
    strict_fake.enqueue(text_message("lost with the process"), delay=LONG_S)
    strict_fake.enqueue(text_message("Clicked it, after a restart."))

    first = await launch.start()
    session = await create_session(first.client, task="Click, then report")
    sid, rid = session["id"], session["active_run_id"]
    await strict_fake.wait_for_requests(2, within=20)
    before = await all_events(first.client, sid)
    first.kill()

    # The second model call was under way: its turn.started is the last thing committed.
    assert types(before)[-1] == "turn.started" and before[-1]["data"]["turn"] == 1
    assert "tool.result" in types(before)

    second = await launch.start()
    run = await wait_for_run(second.client, sid, rid, within=30)
    after = await all_events(second.client, sid)

    assert after[: len(before)] == before  # same seq, type, data, timestamps
    assert_gapless(after)
    resumed = after[len(before) :]
    assert types(resumed)[0] == "run.resumed" and types(after).count("run.resumed") == 1
    assert types(resumed)[-1] == "run.completed"
    assert "tool.call" not in types(resumed)  # the click ran once, before the crash
    assert [e["data"]["turn"] for e in events_of(resumed, "turn.started")] == [1]
    assert run["status"] == "completed" and run["stop_reason"] == "end_turn"
    assert run["output"] == "Clicked it, after a restart." and run["turns"] == 2

    # The lost call was sent again, unchanged, and answered by the next scripted reply.
    requests = strict_fake.requests
    assert len(requests) == 3
    assert requests[2].body["messages"] == requests[1].body["messages"]
    assert strict_fake.script_errors == []
    turns = (await second.client.get(f"/v1/sessions/{sid}/turns", params={"run_id": rid})).json()
    assert [t["index"] for t in turns["data"]] == [0, 1]
    state = (await second.client.get(f"/v1/sessions/{sid}")).json()
    assert state["status"] == "idle" and state["last_event_seq"] == after[-1]["seq"]
    # Usage across the restart: each turn counted once, in the run and in the session.
    for key in ("input_tokens", "output_tokens", "cache_read_input_tokens"):
        assert run["usage"][key] == sum(t["usage"][key] for t in turns["data"])
        assert state["usage"][key] == run["usage"][key]
    assert run["usage"]["output_tokens"] > 0


# ---- 2. SIGKILL during an action, on a real browser -----------------------------------------------

CLICK_PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>clicks</title>
<style>html, body { margin: 0; height: 100%; } #target { position: fixed; inset: 0; }</style>
</head><body><div id="target"></div><script>
  // Each click is reported to the server, and the URL changes at once (no page load), so the
  // screenshot after the click records /clicked.html as the session's page URL.
  document.getElementById("target").addEventListener("click", () => {
    fetch("/click", { method: "POST", keepalive: true });
    history.pushState(null, "", "/clicked.html");
  });
</script></body></html>"""


class ClickSite(ThreadingHTTPServer):
    """Serves CLICK_PAGE at every *.html path; counts POST /click and records page loads."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ClickHandler)
        self.lock = threading.Lock()
        self.clicks = 0
        self.loads: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ClickHandler(BaseHTTPRequestHandler):
    server: ClickSite

    def do_GET(self) -> None:
        if not self.path.endswith(".html"):
            self.send_error(404)  # favicon and the like
            return
        with self.server.lock:
            self.server.loads.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(CLICK_PAGE)))
        self.end_headers()
        self.wfile.write(CLICK_PAGE)

    def do_POST(self) -> None:
        if self.path != "/click":
            self.send_error(404)
            return
        with self.server.lock:
            self.server.clicks += 1
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean


@pytest.fixture
def click_site() -> Iterator[ClickSite]:
    site = ClickSite()
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    yield site
    site.shutdown()
    site.server_close()


@pytest.fixture(scope="session")
def chromium() -> str:
    return require_chromium()  # fails on CI, skips elsewhere when Chromium is missing


@pytest.mark.browser
async def test_sigkill_during_an_action_never_runs_it_twice(
    launch: Launcher, strict_fake: FakeAnthropic, click_site: ClickSite, chromium: str
) -> None:
    click = computer_call("left_click", coordinate=[100, 100])
    wait = computer_call("wait", duration=LONG_S)
    strict_fake.enqueue(tool_use_message(click), tool_use_message(wait))
    strict_fake.enqueue(text_message("Clicked once; the wait was interrupted."))
    browser = {"type": "browser", "start_url": f"{click_site.url}/start.html"}

    first = await launch.start(CHROMIUM_PATH=chromium)
    session = await create_session(first.client, task="Click, then wait", computer=browser)
    sid, rid = session["id"], session["active_run_id"]

    async def waiting() -> bool:
        # The wait is in flight once its tool.call (the intent record) is committed.
        calls = events_of(await all_events(first.client, sid), "tool.call")
        return any(c["data"]["call_id"] == wait["id"] for c in calls)

    await eventually(waiting, "the wait's tool.call")

    async def clicked_once() -> bool:
        with click_site.lock:
            return click_site.clicks == 1

    await eventually(clicked_once, "the page to report the click", within=5)
    before = await all_events(first.client, sid)
    first.kill()

    clicked = next(
        e["data"] for e in events_of(before, "tool.result") if e["data"]["call_id"] == click["id"]
    )
    assert clicked["is_error"] is False
    assert clicked["screenshot"]["page_url"] == f"{click_site.url}/clicked.html"

    second = await launch.start(CHROMIUM_PATH=chromium)
    run = await wait_for_run(second.client, sid, rid, within=30)
    after = await all_events(second.client, sid)

    assert run["status"] == "completed", run
    assert after[: len(before)] == before
    assert_gapless(after)
    resumed = after[len(before) :]
    assert types(resumed)[0] == "run.resumed"
    # The wait is answered, not executed again: no second tool.call, an error result at once.
    assert [c["data"]["call_id"] for c in events_of(after, "tool.call")] == [
        click["id"],
        wait["id"],
    ]
    (answer,) = [e["data"] for e in events_of(resumed, "tool.result")]
    assert answer["call_id"] == wait["id"] and answer["is_error"] is True
    assert answer["error"] == INTERRUPTED
    # A fresh screenshot, from a browser re-created at the last recorded page URL.
    assert answer["screenshot"]["page_url"] == f"{click_site.url}/clicked.html"
    with click_site.lock:
        assert click_site.loads == ["/start.html", "/clicked.html"]
        assert click_site.clicks == 1  # nothing ran twice

    requests = strict_fake.requests
    assert len(requests) == 3
    result = tool_results(requests[2].body)[wait["id"]]
    assert result["is_error"] is True
    assert [b["type"] for b in result["content"]] == ["text", "image"]
    assert "Interrupted" in result["content"][0]["text"]
    assert strict_fake.script_errors == []


# ---- 3. SIGTERM drains --------------------------------------------------------------------------


async def test_sigterm_drains_closes_streams_and_leaves_the_run_resumable(
    launch: Launcher, strict_fake: FakeAnthropic, clean_db: str
) -> None:
    strict_fake.enqueue(text_message("cut off by the shutdown"), delay=LONG_S)
    strict_fake.enqueue(text_message("Finished after the restart."))

    first = await launch.start()
    session = await create_session(first.client, task="Take your time")
    sid, rid = session["id"], session["active_run_id"]
    await strict_fake.wait_for_requests(1, within=20)

    streamed: list[dict[str, Any]] = []
    attached = asyncio.Event()

    async def follow() -> None:
        # Ends only if the server ends the stream: a default stream follows across runs.
        async with aconnect_sse(first.client, "GET", f"/v1/sessions/{sid}/events") as source:
            async for sse in source.aiter_sse():
                if sse.data:
                    streamed.append(json.loads(sse.data))
                    attached.set()

    stream = asyncio.create_task(follow())
    await asyncio.wait_for(attached.wait(), 10)
    before = await all_events(first.client, sid)

    started = time.monotonic()
    first.proc.send_signal(signal.SIGTERM)
    # Ends cleanly only if the server ends it; a connection dropped mid-stream raises here.
    await asyncio.wait_for(stream, GRACE_S + 5)

    # New work during the shutdown is refused: uvicorn stops listening at once, so a new
    # connection is refused; a request that still got through must get 503, never a run.
    await asyncio.sleep(0.3)
    with contextlib.suppress(httpx.TransportError):
        late = await first.client.post(
            "/v1/sessions", json={"provider": "anthropic", "computer": FAKE_COMPUTER, "task": "x"}
        )
        assert late.status_code == 503, late.text

    code = await first.wait_exit(GRACE_S + 10)
    elapsed = time.monotonic() - started
    assert code == 0, f"exit code {code}"
    # The grace period, plus up to ~1.5 s for streams to end first (uvicorn waits for them
    # before the runs drain) and the interpreter's exit, slow on a loaded machine.
    assert elapsed < GRACE_S + 6, f"shutdown took {elapsed:.1f} s"
    assert [e["seq"] for e in streamed] == [e["seq"] for e in before]
    # The model call was cut off, and the run left resumable: running, with no terminal event.
    assert strict_fake.disconnects == 1
    assert await run_row(clean_db, rid) == ("running", 0)

    second = await launch.start()
    run = await wait_for_run(second.client, sid, rid, within=30)
    after = await all_events(second.client, sid)
    assert run["status"] == "completed" and run["output"] == "Finished after the restart."
    assert after[: len(before)] == before
    assert_gapless(after)
    assert types(after[len(before) :])[0] == "run.resumed"
    assert types(after).count("run.resumed") == 1
    assert len(strict_fake.requests) == 2 and strict_fake.script_errors == []


# ---- 4. A run that cannot be resumed ------------------------------------------------------------


@pytest.mark.parametrize("cause", ["provider_unreachable", "computer_unavailable"])
async def test_a_run_that_cannot_resume_fails_with_a_clear_error(
    launch: Launcher, strict_fake: FakeAnthropic, cause: str
) -> None:
    strict_fake.enqueue(text_message("lost with the process"), delay=LONG_S)
    first = await launch.start()
    session = await create_session(first.client, task="Anything")
    sid, rid = session["id"], session["active_run_id"]
    await strict_fake.wait_for_requests(1, within=20)
    before = await all_events(first.client, sid)
    first.kill()

    if cause == "provider_unreachable":
        # Nothing listens there: every attempt of the resumed call is refused.
        second = await launch.start(ANTHROPIC_BASE_URL=f"http://127.0.0.1:{free_port()}")
    else:
        # The session's computer type was switched off between the two processes.
        second = await launch.start(ENABLE_FAKE_COMPUTER="false")
    run = await wait_for_run(second.client, sid, rid, within=30)
    after = await all_events(second.client, sid)

    assert after[: len(before)] == before
    assert_gapless(after)
    resumed = after[len(before) :]
    failed = resumed[-1]
    assert failed["type"] == "run.failed" and failed["data"]["stop_reason"] == "error"
    error = run["error"]
    assert run["status"] == "failed"
    assert {k: failed["data"]["error"][k] for k in ("type", "message")} == error
    if cause == "provider_unreachable":
        assert types(resumed)[0] == "run.resumed"
        assert len(events_of(resumed, "provider.retry")) == 2  # PROVIDER_MAX_RETRIES
        assert error["type"] == "provider_error"
        assert "connection" in error["message"].lower(), error
    else:
        assert "run.resumed" not in types(resumed)  # it never got going
        assert error["type"] == "computer_error"
        assert "fake computer is disabled" in error["message"], error
    state = (await second.client.get(f"/v1/sessions/{sid}")).json()
    assert state["status"] == "idle" and state["active_run_id"] is None
    assert len(strict_fake.requests) == 1 and strict_fake.script_errors == []
