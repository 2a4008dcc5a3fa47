"""A cdp session end to end over real HTTP: the service attaches to a Chromium it did
not start (as it would to a provider's), a run driven by the strict fake Anthropic
clicks a real page there, and closing the session leaves that browser running."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.helpers import create_session, read_stream, types
from tests.browser_support import Page, PageServer, require_chromium, serve_pages
from tests.conftest import Service
from tests.fakes.anthropic_server import FakeAnthropic, computer_call, text_message
from tests.fakes.anthropic_server import tool_use_message as tool_use
from tests.remote_chromium import RemoteChromium, remote_chromium

BUTTON_CENTER = (200, 230)  # #press: left 100, top 200, 200x60 (border-box: exact)
PAGE_HTML = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>cdp</title>
<style>
  html, body { margin: 0; }
  #press { position: absolute; box-sizing: border-box; margin: 0;
           left: 100px; top: 200px; width: 200px; height: 60px; }
</style></head>
<body><button id="press">Press</button>
<script>
  document.addEventListener("click", (e) => fetch("/report", {
    method: "POST", headers: {"content-type": "application/json"},
    body: JSON.stringify({seq: 1, type: "click", target: e.target.id, x: e.clientX, y: e.clientY}),
  }), true);
</script></body></html>
"""


@pytest.fixture(scope="module")
def remote() -> Iterator[RemoteChromium]:
    with remote_chromium(require_chromium()) as chromium:
        yield chromium


@pytest.fixture(scope="module")
def page_server() -> Iterator[PageServer]:
    with serve_pages({"/press.html": PAGE_HTML}) as server:
        yield server


@pytest.mark.browser
async def test_a_cdp_session_drives_the_remote_browser(
    service: Service, anthropic_fake: FakeAnthropic, remote: RemoteChromium, page_server: PageServer
) -> None:
    anthropic_fake.strict = True  # a request the script did not plan for fails the run
    page = Page(page_server.url("/press.html"), page_server)
    anthropic_fake.enqueue(
        tool_use(computer_call("left_click", coordinate=list(BUTTON_CENTER))),
        text_message("Pressed."),
    )
    computer: dict[str, Any] = {
        "type": "cdp",
        "cdp_url": remote.http_url,
        "start_url": page.url,
        "display": {"width": 1280, "height": 800},
    }
    session = await create_session(service.client, task="Press the button", computer=computer)
    sid = session["id"]
    events = await read_stream(service.client, sid, params={"until": "run_end"})

    assert types(events)[-1] == "run.completed", events[-1]
    assert events[-1]["data"]["output"] == "Pressed."
    assert anthropic_fake.script_errors == [] and anthropic_fake.pending == 0
    (result,) = [e["data"] for e in events if e["type"] == "tool.result"]
    assert not result["is_error"] and result["screenshot"]["page_url"] == page.url
    assert (result["screenshot"]["width"], result["screenshot"]["height"]) == (1280, 800)
    reports = await page.wait_for(lambda got: len(got) >= 1)
    assert [(r["target"], r["x"], r["y"]) for r in reports] == [("press", *BUTTON_CENTER)]

    closed = await service.client.delete(f"/v1/sessions/{sid}")
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    assert len(service.services.computers) == 0
    # Not our browser: closing the session disconnected from it, and nothing more.
    assert remote.running() and [p["url"] for p in remote.pages()] == [page.url]


async def test_a_cdp_computer_without_cdp_url_is_refused(service: Service) -> None:
    response = await service.client.post(
        "/v1/sessions", json={"provider": "anthropic", "computer": {"type": "cdp"}}
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert [e["field"] for e in body["errors"]] == ["computer.cdp_url"]
    assert "computer.cdp_url" in body["detail"]
