"""The session's browser through the service: a cancel during a slow browser start
takes effect at once and leaks nothing; a session whose Chromium died gets a new one;
an idle session's browser is released and re-created where the session was."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import repositories as repo
from tests.api.helpers import create_session, wait_for_run
from tests.browser_support import Page, require_chromium, serve_pages
from tests.conftest import Service, ServiceServer, make_settings
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    computer_call,
    text_message,
    tool_use_message,
)

pytestmark = pytest.mark.browser


class _SlowPage(BaseHTTPRequestHandler):
    # How many times a browser has asked for /slow: the proof that it is loading it.
    slow_requests = 0
    _lock = threading.Lock()

    def do_GET(self) -> None:
        if self.path.startswith("/slow"):
            with _SlowPage._lock:
                _SlowPage.slow_requests += 1
            time.sleep(5)
        body = b"<html><body><button>ok</button></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def pages() -> Iterator[str]:
    require_chromium()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowPage)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_cancel_during_a_slow_browser_start(
    service: Service, anthropic_fake: FakeAnthropic, pages: str
) -> None:
    computer = {"type": "browser", "start_url": f"{pages}/slow"}
    before = _SlowPage.slow_requests
    session = await create_session(service.client, task="open it", computer=computer)
    sid, rid = session["id"], session["active_run_id"]
    # Cancel only once the browser is loading the slow start page: a cancel of a run
    # that never got that far must not pass for one during the browser's start.
    deadline = time.monotonic() + 10
    while _SlowPage.slow_requests == before:
        assert time.monotonic() < deadline, "the browser never asked for the start page"
        await asyncio.sleep(0.01)
    started = time.monotonic()
    response = await service.client.post(f"/v1/sessions/{sid}/runs/{rid}/cancel")
    elapsed = time.monotonic() - started
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    assert elapsed < 1.0, f"cancel waited {elapsed:.2f}s for the browser"
    assert service.services.computers.get(sid) is None
    assert service.services.browsers.contexts == []  # the half-started context was closed
    assert anthropic_fake.requests == []
    events = (
        await service.client.get(f"/v1/sessions/{sid}/events", params={"format": "json"})
    ).json()
    assert [e["type"] for e in events["data"]] == ["session.created", "run.queued", "run.cancelled"]


async def test_a_dead_browser_is_replaced_for_the_next_run(
    service: Service, anthropic_fake: FakeAnthropic, pages: str
) -> None:
    anthropic_fake.strict = True
    anthropic_fake.enqueue(text_message("first"))
    session = await create_session(
        service.client, task="look", computer={"type": "browser", "start_url": f"{pages}/page"}
    )
    sid = session["id"]
    assert (await wait_for_run(service.client, sid, session["active_run_id"]))[
        "status"
    ] == "completed"
    first = service.services.computers.get(sid)
    assert first is not None and first.is_alive()

    browser = await service.services.browsers.browser()
    await browser.close()  # as if Chromium crashed
    assert not first.is_alive()

    anthropic_fake.enqueue(
        tool_use_message(computer_call("left_click", coordinate=[20, 20])), text_message("again")
    )
    follow = await service.client.post(f"/v1/sessions/{sid}/runs", json={"input": "click"})
    run = await wait_for_run(service.client, sid, follow.json()["id"])
    assert run["status"] == "completed", run
    second = service.services.computers.get(sid)
    assert second is not None and second is not first and second.is_alive()
    # Re-created where the session was, and the click ran without an error.
    assert await second.current_url() == f"{pages}/page"
    turns = (
        await service.client.get(f"/v1/sessions/{sid}/turns", params={"run_id": run["id"]})
    ).json()
    assert turns["data"][0]["results"][0]["is_error"] is False


# Two pages that report their loads and clicks: /a.html links to /b.html.
LINK = (110, 35)  # #next on /a.html: left 20, top 20, 180x30
BUTTON = (110, 85)  # #ok on /b.html: left 20, top 70, 180x30
_REPORTING = b"""<!doctype html>
<html><head><meta charset="utf-8"><style>
  html, body { margin: 0; }
  a, button { position: absolute; display: block; box-sizing: border-box; margin: 0;
              left: 20px; width: 180px; height: 30px; }
  #next { top: 20px; } #ok { top: 70px; }
</style></head><body>%s<script>
  let seq = 0;
  const report = (data) => fetch("/report", {
    method: "POST", keepalive: true, headers: {"content-type": "application/json"},
    body: JSON.stringify({seq: ++seq, path: location.pathname, ...data}),
  });
  report({type: "load"});
  document.addEventListener("click", (e) => report({type: "click", target: e.target.id}), true);
</script></body></html>"""
TWO_PAGES = {
    "/a.html": _REPORTING % b'<a id="next" href="/b.html">next</a>',
    "/b.html": _REPORTING % b'<button id="ok">ok</button>',
}


async def test_an_idle_browser_is_released_and_the_next_run_reopens_the_last_page(
    clean_db: str, anthropic_fake: FakeAnthropic
) -> None:
    require_chromium()
    anthropic_fake.strict = True
    settings = make_settings(clean_db, anthropic_fake.base_url, computer_idle_ttl_s=0.5)
    with serve_pages(TWO_PAGES) as server:
        page = Page(server.url("/a.html"), server)
        async with ServiceServer(settings) as service:
            computers, pool = service.services.computers, service.services.browsers
            # A run that lasts longer than the TTL keeps its browser: the wait, then the
            # click on the link, run on the same page.
            anthropic_fake.enqueue(
                tool_use_message(computer_call("wait", duration=1)),
                tool_use_message(computer_call("left_click", coordinate=list(LINK))),
                text_message("on b"),
            )
            session = await create_session(
                service.client, task="go to b", computer={"type": "browser", "start_url": page.url}
            )
            sid = session["id"]
            run = await wait_for_run(service.client, sid, session["active_run_id"])
            assert run["status"] == "completed" and anthropic_fake.script_errors == [], run
            reports = await page.wait_for(lambda got: any(r["path"] == "/b.html" for r in got))
            # Each page numbers its own reports: compare them as a set.
            assert {(r["type"], r["path"]) for r in reports} == {
                ("load", "/a.html"),
                ("click", "/a.html"),
                ("load", "/b.html"),
            }

            # Idle: the computer and its browser context go once the TTL has passed.
            deadline = time.monotonic() + 5
            while computers.get(sid) is not None or pool.contexts:
                assert time.monotonic() < deadline, "the idle browser was not released"
                await asyncio.sleep(0.05)

            server.clear()
            anthropic_fake.enqueue(
                tool_use_message(computer_call("left_click", coordinate=list(BUTTON))),
                text_message("clicked ok"),
            )
            follow = await service.client.post(f"/v1/sessions/{sid}/runs", json={"input": "ok"})
            run = await wait_for_run(service.client, sid, follow.json()["id"])
            assert run["status"] == "completed" and anthropic_fake.script_errors == [], run
            # Re-created where the session was: the page server saw /b.html load again,
            # then the click on its button.
            reports = await page.wait_for(lambda got: any(r["type"] == "click" for r in got))
            assert [(r["type"], r["path"], r.get("target")) for r in reports] == [
                ("load", "/b.html", None),
                ("click", "/b.html", "ok"),
            ]
            turns = (
                await service.client.get(f"/v1/sessions/{sid}/turns", params={"run_id": run["id"]})
            ).json()
            assert turns["data"][0]["results"][0]["is_error"] is False


@pytest.mark.parametrize("last_url", ["chrome-error://chromewebdata/", "http://127.0.0.1:9/gone"])
async def test_a_last_page_that_cannot_be_reopened_falls_back_to_start_url(
    service: Service, anthropic_fake: FakeAnthropic, pages: str, last_url: str
) -> None:
    anthropic_fake.strict = True
    anthropic_fake.enqueue(text_message("first"))
    start = f"{pages}/page"
    session = await create_session(
        service.client, task="look", computer={"type": "browser", "start_url": start}
    )
    sid = session["id"]
    await wait_for_run(service.client, sid, session["active_run_id"])
    await service.services.computers.release(sid)  # as the idle reaper would

    async def last_page(db: AsyncSession) -> None:
        await repo.update_session(db, sid, page_url=last_url)

    await service.services.log.append(sid, None, apply=last_page)
    anthropic_fake.enqueue(text_message("second"))
    follow = await service.client.post(f"/v1/sessions/{sid}/runs", json={"input": "again"})
    run = await wait_for_run(service.client, sid, follow.json()["id"])
    assert run["status"] == "completed", run
    computer = service.services.computers.get(sid)
    assert computer is not None and await computer.current_url() == start
