"""A browser's own EventSource, from a page of another origin, on a service with API keys
and CORS: a read token in the URL, every event of a run exactly once and in order across
a connection the test drops in the middle (the browser reconnects by itself with
Last-Event-ID), and EventSource CLOSED at the end (the service answers 204).

Real Chromium, the real service over HTTP (through a TCP proxy the test cuts), the
strict fake Anthropic API and the `browser` computer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from urllib.parse import quote

import pytest
from playwright.async_api import Browser

from tests.browser.support import (
    API_KEY,
    AUTH,
    TENANT,
    TcpProxy,
    issue_token,
    log_of,
    page_errors,
)
from tests.browser_support import PageServer, serve_pages
from tests.conftest import Service, ServiceServer, make_settings
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    computer_call,
    text_message,
    tool_use_message,
)
from tests.processes import SQLITE_PASS_ONLY

pytestmark = [pytest.mark.browser, SQLITE_PASS_ONLY]

# The client page: it knows nothing of the service but the URL in its fragment.
CLIENT_HTML = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>eventsource client</title></head>
<body>
<script>
  window.seen = [];
  window.opens = 0;
  window.errorStates = [];
  const types = [
    "session.created", "session.closed", "run.queued", "run.started",
    "run.awaiting_safety_check", "run.resumed", "run.completed", "run.failed",
    "run.cancelled", "turn.started", "turn.completed", "assistant.message",
    "assistant.thinking", "tool.call", "tool.result", "safety_check.pending",
    "safety_check.acknowledged", "safety_check.rejected", "safety_check.expired",
    "provider.retry",
  ];
  const source = new EventSource(decodeURIComponent(location.hash.slice(1)));
  window.source = source;
  source.onopen = () => { window.opens += 1; };
  source.onerror = () => { window.errorStates.push(source.readyState); };
  for (const type of types) {
    source.addEventListener(type, (e) => {
      const event = JSON.parse(e.data);
      window.seen.push({seq: event.seq, type: event.type, id: e.lastEventId});
    });
  }
</script>
</body></html>
"""
TARGET_HTML = b"""<!doctype html><html><head><meta charset="utf-8"><title>target</title></head>
<body><button id="b" style="position:absolute;left:100px;top:100px;width:200px;height:60px">
Go</button></body></html>"""


@pytest.fixture(scope="module")
def pages() -> Iterator[PageServer]:
    with serve_pages({"/client.html": CLIENT_HTML, "/target.html": TARGET_HTML}) as server:
        yield server


@pytest.fixture
async def service(
    clean_db: str, strict_fake: FakeAnthropic, pages: PageServer
) -> AsyncIterator[Service]:
    settings = make_settings(
        clean_db,
        strict_fake.base_url,
        api_keys=f"{API_KEY}:{TENANT}",
        cors_allow_origins=pages.url("").rstrip("/"),
        sse_retry_ms=300,  # the browser waits this long before it reconnects
    )
    async with ServiceServer(settings) as svc:
        yield svc


async def test_eventsource_from_another_origin_survives_a_drop_and_closes_on_204(
    service: Service, strict_fake: FakeAnthropic, pages: PageServer, browser: Browser
) -> None:
    # Replies held back, so the run is still going when the connection drops.
    strict_fake.enqueue(
        tool_use_message(computer_call("screenshot")),
        tool_use_message(computer_call("left_click", coordinate=[200, 130])),
        tool_use_message(computer_call("type", text="hello")),
        tool_use_message(computer_call("key", text="Return")),
        tool_use_message(computer_call("screenshot")),
        text_message("All done."),
        delay=0.4,
    )
    created = await service.client.post(
        "/v1/sessions",
        headers=AUTH,
        json={
            "provider": "anthropic",
            "task": "press the button",
            "computer": {"type": "browser", "start_url": pages.url("/target.html")},
        },
    )
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    token = await issue_token(service, sid, "read")

    async with TcpProxy(int(service.url.rsplit(":", 1)[1])) as proxy:
        events_url = f"{proxy.url}{token['events_url']}&until=run_end"
        context = await browser.new_context()
        try:
            page = await context.new_page()
            errors = page_errors(page)
            await page.goto(f"{pages.url('/client.html')}#{quote(events_url, safe='')}")
            # Some events in, the run not over: drop every connection.
            await page.wait_for_function(
                "window.seen.some((e) => e.type === 'tool.result')", timeout=15_000
            )
            seen_before = await page.evaluate("window.seen.length")
            assert not await page.evaluate(
                "window.seen.some((e) => e.type.startsWith('run.') && "
                "['run.completed', 'run.failed', 'run.cancelled'].includes(e.type))"
            )
            proxy.cut()
            # The browser reconnects by itself and, after the run's end, gets 204: CLOSED.
            await page.wait_for_function("window.source.readyState === 2", timeout=30_000)
            seen = await page.evaluate("window.seen")
            opens = await page.evaluate("window.opens")
            error_states = await page.evaluate("window.errorStates")
        finally:
            await context.close()

    stored = await log_of(service, sid)
    assert stored[-1]["type"] == "run.completed"
    # Every event exactly once, in order, each with its seq as the SSE id.
    assert [(e["seq"], e["type"]) for e in seen] == [(e["seq"], e["type"]) for e in stored]
    assert all(e["id"] == str(e["seq"]) for e in seen)
    assert 0 < seen_before < len(stored)
    # Two drops at least (the cut, then the end of the run's stream), each followed by a
    # reconnect (readyState CONNECTING), and the last answer made it CLOSED.
    assert opens >= 2 and error_states.count(0) >= 2 and error_states[-1] == 2
    sent, received = proxy.sent().lower(), proxy.received()
    # The reconnects named the last event seen; the token travelled in the URL.
    assert b"last-event-id: " in sent and b"access_token=" in sent
    assert b"origin: " + pages.url("").rstrip("/").encode() in sent
    assert b"HTTP/1.1 204" in received
    assert b"access-control-allow-origin: " in received.lower()
    # (Console errors are expected here: the cut stream, the page server's missing favicon.)
    assert [e for e in errors if e.startswith("pageerror")] == []
