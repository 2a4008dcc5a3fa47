"""The viewer page (`/viewer/sessions/{sid}`) in real Chromium against the real service:
with a control token a person approves, rejects, cancels and follows up; with a read token
the same page shows no control and the calls a control would make are refused; the page
fetches nothing from anywhere but the service, reconnects by itself after a dropped
connection and shows every event once; its timeline stays bounded on a long session.

The strict fake Anthropic API plays the model; the `browser` computer drives a local page.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from tests.browser.support import (
    API_KEY,
    AUTH,
    TENANT,
    TcpProxy,
    issue_token,
    log_of,
    offline_except,
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

TARGET_HTML = b"""<!doctype html><html><head><meta charset="utf-8"><title>target</title>
<style>body{margin:0;font:20px sans-serif} button{position:absolute;width:200px;height:60px}
#a{left:100px;top:100px} #b{left:400px;top:300px}</style></head>
<body><button id="a">First</button><button id="b">Second</button></body></html>"""
CLICK_A = [200, 130]
CLICK_B = [500, 330]
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def target() -> Iterator[PageServer]:
    with serve_pages({"/target.html": TARGET_HTML}) as server:
        yield server


@pytest.fixture
async def service(clean_db: str, strict_fake: FakeAnthropic) -> AsyncIterator[Service]:
    settings = make_settings(
        clean_db, strict_fake.base_url, api_keys=f"{API_KEY}:{TENANT}", sse_retry_ms=300
    )
    async with ServiceServer(settings) as svc:
        yield svc


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield context
    finally:
        await context.close()


async def create_session(service: Service, target: PageServer, task: str | None) -> str:
    body: dict[str, Any] = {
        "provider": "anthropic",
        "computer": {"type": "browser", "start_url": target.url("/target.html")},
        "safety": {"require_ack_for": ["click"]},
    }
    if task is not None:
        body["task"] = task
    response = await service.client.post("/v1/sessions", json=body, headers=AUTH)
    assert response.status_code == 201, response.text
    sid: str = response.json()["id"]
    return sid


async def log_seqs(page: Page) -> list[int]:
    seqs: list[int] = await page.eval_on_selector_all(
        "[role=log] [data-seq]", "(rows) => rows.map((r) => Number(r.dataset.seq))"
    )
    return seqs


async def expect_log_matches(page: Page, service: Service, sid: str) -> list[dict[str, Any]]:
    """Wait until the page's log region shows the whole stored log, each event once."""
    stored = await log_of(service, sid)
    last = stored[-1]["seq"]
    await page.wait_for_selector(f"[role=log] [data-seq='{last}']", timeout=15_000)
    assert await log_seqs(page) == [e["seq"] for e in stored]
    return stored


async def run_status(service: Service, sid: str) -> dict[str, Any]:
    session = (await service.client.get(f"/v1/sessions/{sid}", headers=AUTH)).json()
    run: dict[str, Any] = session["last_run"]
    return run


async def screenshot_src(page: Page) -> str:
    src = await page.get_by_role("img", name="Latest screenshot").get_attribute("src")
    assert src is not None
    return src


async def test_a_person_approves_rejects_cancels_and_follows_up_in_the_viewer(
    service: Service,
    strict_fake: FakeAnthropic,
    target: PageServer,
    context: BrowserContext,
) -> None:
    strict_fake.enqueue(
        tool_use_message(computer_call("screenshot")),
        tool_use_message(computer_call("left_click", coordinate=CLICK_A)),
        text_message("Clicked the first button."),
        delay=0.2,
    )
    sid = await create_session(service, target, "click the first button")
    token = await issue_token(service, sid, "control")

    async with TcpProxy(int(service.url.rsplit(":", 1)[1])) as proxy:
        offline = await offline_except(context, proxy.url)
        page = await context.new_page()
        errors = page_errors(page)
        await page.goto(proxy.url + token["viewer_url"])

        # The first screenshot, then the click waits for a decision.
        screenshot = page.get_by_role("img", name="Latest screenshot")
        await expect(screenshot).to_be_visible(timeout=15_000)
        first_src = await screenshot_src(page)
        acknowledge = page.get_by_role("button", name="Acknowledge")
        await expect(acknowledge).to_be_visible(timeout=15_000)
        check = (
            await service.client.get(
                f"/v1/sessions/{sid}/safety-checks", params={"status": "pending"}, headers=AUTH
            )
        ).json()["data"][0]
        card = page.locator(f"[data-check-id='{check['id']}']")
        await expect(card).to_contain_text(check["message"])
        await expect(card).to_contain_text(f"left click at ({CLICK_A[0]}, {CLICK_A[1]})")
        # The screenshot it was judged on: the one the model saw before asking to click.
        judged = card.get_by_role("img", name="Screenshot the check was judged on")
        assert await judged.get_attribute("src") == first_src
        # The pointer action under review is marked on the latest screenshot.
        marker = page.locator("#pointer")
        await expect(marker).to_be_visible()
        left = await marker.evaluate("(el) => el.style.left")
        assert left == f"{100 * CLICK_A[0] / 1280}%"

        # The connection drops while the run waits: the page reconnects by itself.
        proxy.cut()
        await expect(page.locator("#connection")).to_have_text("Live", timeout=15_000)

        # Acknowledge: the click runs, the run completes, the screenshot updates.
        await acknowledge.click()
        await expect(page.locator("#run-status")).to_contain_text("completed", timeout=15_000)
        await expect(acknowledge).to_have_count(0)
        assert await screenshot_src(page) != first_src
        run = await run_status(service, sid)
        assert run["status"] == "completed"
        decided = (
            await service.client.get(f"/v1/sessions/{sid}/safety-checks", headers=AUTH)
        ).json()["data"][0]
        assert decided["status"] == "acknowledged"
        # Recorded as decided by this token (its id, never the token itself).
        assert decided["decided_by"] == f"token:{token['token'].split('.')[0]}"
        await expect_log_matches(page, service, sid)

        # Send: a follow-up run, whose click is rejected: the run ends cancelled.
        strict_fake.enqueue(tool_use_message(computer_call("left_click", coordinate=CLICK_B)))
        await page.get_by_role("textbox", name="Follow-up message").fill("click the second")
        await page.get_by_role("button", name="Send").click()
        reject = page.get_by_role("button", name="Reject")
        await expect(reject).to_be_visible(timeout=15_000)
        await expect(page.locator("[data-check-id]")).to_contain_text(
            f"left click at ({CLICK_B[0]}, {CLICK_B[1]})"
        )
        await reject.click()
        await expect(page.locator("#run-status")).to_contain_text(
            "cancelled (safety check rejected)", timeout=15_000
        )
        run = await run_status(service, sid)
        assert (run["status"], run["stop_reason"]) == ("cancelled", "safety_check_rejected")
        await expect_log_matches(page, service, sid)

        # Send again, and cancel the run in the middle of its model call.
        strict_fake.enqueue(text_message("never shown"), delay=30)
        await page.get_by_role("textbox", name="Follow-up message").fill("take your time")
        await page.get_by_role("button", name="Send").click()
        cancel = page.get_by_role("button", name="Cancel run")
        await expect(cancel).to_be_enabled(timeout=15_000)
        await strict_fake.wait_for_requests(4)
        await cancel.click()
        await expect(page.locator("#run-status")).to_contain_text(
            "cancelled (cancelled)", timeout=15_000
        )
        run = await run_status(service, sid)
        assert (run["status"], run["stop_reason"]) == ("cancelled", "cancelled")
        stored = await expect_log_matches(page, service, sid)
        assert [e["type"] for e in stored].count("run.cancelled") == 2

        # Its tokens revoked, the page's next reconnect is refused (401): it stops there
        # and says why, rather than retrying forever.
        revoked = await service.client.delete(f"/v1/sessions/{sid}/tokens", headers=AUTH)
        assert revoked.status_code == 204
        proxy.cut()
        await expect(page.locator("#connection")).to_have_text(
            re.compile(r"^Disconnected: .*revoked"), timeout=15_000
        )

    # Nothing but the service was asked for anything; nothing broke in the page.
    assert offline.blocked == []
    assert [e for e in errors if e.startswith("pageerror")] == []


async def test_a_read_token_shows_no_control_and_cannot_act(
    service: Service,
    strict_fake: FakeAnthropic,
    target: PageServer,
    browser: Browser,
) -> None:
    strict_fake.enqueue(
        tool_use_message(computer_call("screenshot")),
        tool_use_message(computer_call("left_click", coordinate=CLICK_A)),
    )
    sid = await create_session(service, target, "click the first button")
    token = await issue_token(service, sid, "read")
    context = await browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    try:
        offline = await offline_except(context, service.url)
        page = await context.new_page()
        errors = page_errors(page)
        response = await page.goto(service.url + token["viewer_url"])
        assert response is not None and response.status == 200

        # The run waits on a check: the page shows it, but offers nothing to do about it.
        await expect(page.get_by_role("img", name="Latest screenshot")).to_be_visible(
            timeout=15_000
        )
        await expect(page.locator("[data-check-id]")).to_be_visible(timeout=15_000)
        await expect(page.locator("#run-status")).to_contain_text("awaiting safety check")
        assert await page.get_by_role("button").count() == 0
        assert await page.get_by_role("textbox").count() == 0
        await expect_log_matches(page, service, sid)

        # Usable on a phone: nothing wider than the screen.
        widths = await page.evaluate(
            "[document.documentElement.scrollWidth, window.innerWidth,"
            " document.getElementById('screenshot').getBoundingClientRect().width]"
        )
        assert widths[0] <= widths[1] and 0 < widths[2] <= widths[1]

        # What the controls would call, called from the page with its token: refused.
        check_id = await page.locator("[data-check-id]").get_attribute("data-check-id")
        base = f"/v1/sessions/{sid}"
        statuses = await page.evaluate(
            """async ([token, calls]) => {
                const out = [];
                for (const [method, path, body] of calls) {
                  const response = await fetch(path, {
                    method,
                    headers: {Authorization: `Bearer ${token}`, "Content-Type": "application/json"},
                    body: body === null ? undefined : JSON.stringify(body),
                  });
                  out.push(response.status);
                }
                return out;
            }""",
            [
                token["token"],
                [
                    ["POST", f"{base}/safety-checks/{check_id}/acknowledge", {}],
                    ["POST", f"{base}/safety-checks/{check_id}/reject", {"reason": "no"}],
                    ["POST", f"{base}/cancel", None],
                    ["POST", f"{base}/runs", {"input": "more"}],
                ],
            ],
        )
        assert statuses == [403, 403, 403, 403]
        # And nothing changed: the check still waits.
        pending = (
            await service.client.get(
                f"{base}/safety-checks", params={"status": "pending"}, headers=AUTH
            )
        ).json()["data"]
        assert [c["id"] for c in pending] == [check_id]
        # Closed while watched (a read token outlives the close): the stream ends with
        # session.closed, the reconnect gets 204 and the page stops, saying so.
        assert (await service.client.delete(base, headers=AUTH)).status_code == 200
        await expect(page.locator("#connection")).to_have_text(
            "Session closed: everything is shown", timeout=15_000
        )
        stored = await expect_log_matches(page, service, sid)
        assert stored[-1]["type"] == "session.closed"
        assert offline.blocked == []
        assert [e for e in errors if e.startswith("pageerror")] == []
    finally:
        await context.close()
        await service.client.delete(f"/v1/sessions/{sid}", headers=AUTH)


async def test_the_timeline_stays_bounded_on_a_long_session(
    service: Service, target: PageServer, context: BrowserContext
) -> None:
    sid = await create_session(service, target, None)
    for _ in range(20):
        await service.services.log.append(
            sid, None, [("assistant.message", {"text": "x" * 40})] * 500
        )
    token = await issue_token(service, sid, "read")
    page = await context.new_page()
    await page.goto(service.url + token["viewer_url"])
    await page.wait_for_selector("[role=log] [data-seq='10001']", timeout=30_000)
    seqs = await log_seqs(page)
    assert len(seqs) == 500 and seqs == list(range(9502, 10002))
    await expect(page.locator("#trimmed")).to_have_text(
        re.compile(r"^9501 earlier events are not shown")
    )
