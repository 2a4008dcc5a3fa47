"""The OpenAI loop end to end at the service level: real HTTP in, the real `openai` SDK
out (through the service's OPENAI_BASE_URL) to the strict fake Responses API.

- On the real browser: a scripted computer-use-preview conversation (one action per
  call, coordinates in the display the tool advertises) and a GA `computer` call
  carrying a batch; the page reports what it received back to its own server.
- Provider `pending_safety_checks` over REST (fake computer): the run waits, the
  action does not run until a human acknowledges, the acknowledgment goes back to
  the API verbatim; a second decision is a conflict; a timeout cancels the run and
  the follow-up is accepted; the wait survives a restart.
- The service's own domain policy on the real browser: a click on a page outside
  `allowed_domains` waits for a human, then reaches the page.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from app.computers.base import Click
from app.computers.browser import BrowserComputer
from app.computers.scaling import png_size
from app.settings import Settings
from tests.api.helpers import (
    assert_gapless,
    create_session,
    fake_computer,
    read_stream,
    types,
    wait_for_event,
    wait_for_run,
    waiting_check,
)
from tests.browser_support import Page, PageServer, require_chromium, serve_pages
from tests.conftest import Service, ServiceServer, make_settings
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import (
    FakeOpenAI,
    RecordedRequest,
    Responder,
    computer_call,
    message,
    reasoning,
    response,
    safety_check,
)

SCREEN = (1280, 800)
# Where the page puts its controls (absolute, border-box: these are exact).
FIELD_CENTER = (250, 120)  # #field: left 100, top 100, 300x40
SEND_CENTER = (200, 230)  # #send: left 100, top 200, 200x60
LIST_CENTER = (650, 250)  # #list: left 500, top 100, 300x300, scrolls on its own
SCROLL_PX = 300  # screen pixels: three wheel notches

PAGE_HTML = b"""<!doctype html>
<html>
<head>
<meta charset="utf-8">
<title>form</title>
<style>
  html, body { margin: 0; padding: 0; background: #ffffff; font: 16px sans-serif; }
  button, input, #list { position: absolute; box-sizing: border-box; margin: 0; }
  #field { left: 100px; top: 100px; width: 300px; height: 40px; }
  #send { left: 100px; top: 200px; width: 200px; height: 60px; }
  #list { left: 500px; top: 100px; width: 300px; height: 300px; overflow-y: scroll; }
  #tall { height: 3000px; background: linear-gradient(#fff, #36c); }
</style>
</head>
<body>
<input id="field" autocomplete="off">
<button id="send">Send</button>
<div id="list"><div id="tall"></div></div>
<script>
  // Numbered, because concurrent fetches may reach the server out of order.
  let seq = 0;
  const field = document.getElementById("field");
  const list = document.getElementById("list");
  const report = (data) => fetch("/report", {
    method: "POST",
    headers: {"content-type": "application/json"},
    body: JSON.stringify({seq: ++seq, ...data}),
  });
  document.addEventListener("click", (e) => report({
    type: "click", target: e.target.id || e.target.tagName, x: e.clientX, y: e.clientY,
    value: field.value,
  }), true);
  field.addEventListener("input", () => report({type: "input", value: field.value}));
  // On keyup the key's default action (a select-all, say) has happened.
  field.addEventListener("keyup", (e) => report({
    type: "keyup", key: e.key, ctrl: e.ctrlKey,
    selection: [field.selectionStart, field.selectionEnd],
  }));
  list.addEventListener("scroll", () => report({type: "scroll", top: list.scrollTop}));
</script>
</body>
</html>
"""

CLICK = {"type": "click", "x": 10, "y": 20, "button": "left"}


# ------------------------------------------------------------------ fixtures and helpers


def openai_settings(database_url: str, anthropic_url: str, openai_url: str) -> Settings:
    # The service builds its own AsyncOpenAI from these, as from OPENAI_BASE_URL in production.
    return make_settings(
        database_url, anthropic_url, openai_api_key="test-key", openai_base_url=openai_url
    )


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    # Strict: a request the script did not plan for fails the run instead of passing quietly.
    with FakeOpenAI(strict=True) as server:
        yield server


@pytest.fixture
async def service(
    clean_db: str, anthropic_fake: FakeAnthropic, fake: FakeOpenAI
) -> AsyncIterator[Service]:
    # Replaces conftest's `service` here: the same service, with OpenAI pointed at `fake`.
    async with ServiceServer(
        openai_settings(clean_db, anthropic_fake.base_url, fake.base_url)
    ) as svc:
        yield svc


@pytest.fixture(scope="module")
def page_server() -> Iterator[PageServer]:
    with serve_pages({"/form.html": PAGE_HTML}) as server:
        yield server


@pytest.fixture
def page(page_server: PageServer) -> Page:
    # Only the browser tests ask for a page: the REST tests run without Chromium.
    require_chromium()
    page_server.clear()
    return Page(page_server.url("/form.html"), page_server)


def browser_computer(url: str) -> dict[str, Any]:
    return {
        "type": "browser",
        "start_url": url,
        "display": {"width": SCREEN[0], "height": SCREEN[1]},
    }


def advertised(request: RecordedRequest) -> tuple[int, int]:
    """The display a request's preview tool advertises (the model answers in it)."""
    tool = request.body["tools"][0]
    assert tool["type"] == "computer_use_preview"
    return tool["display_width"], tool["display_height"]


def model_point(request: RecordedRequest, point: tuple[int, int]) -> dict[str, int]:
    """A screen point as the model would give it: in the advertised display."""
    width, height = advertised(request)
    return {"x": round(point[0] * width / SCREEN[0]), "y": round(point[1] * height / SCREEN[1])}


def preview_call(make: Callable[[RecordedRequest], dict[str, Any]]) -> Responder:
    """A responder answering with one preview action built from the request it answers."""
    return lambda request: response(computer_call(make(request)))


def call_outputs(request: RecordedRequest) -> list[dict[str, Any]]:
    return [i for i in request.body["input"] if i.get("type") == "computer_call_output"]


def screenshot_size(output: dict[str, Any]) -> tuple[int, int]:
    """The size of the PNG a computer_call_output sends; asserts it is a PNG data URL."""
    screenshot = output["output"]
    assert screenshot["type"] == "computer_screenshot"
    prefix = "data:image/png;base64,"
    assert screenshot["image_url"].startswith(prefix)
    return png_size(base64.b64decode(screenshot["image_url"].removeprefix(prefix)))


async def reports_to_marker(service: Service, sid: str, page: Page) -> list[dict[str, Any]]:
    """Every report of the session's page up to a marker it reports now, through the
    session's own browser: whatever the page did before this call is among them."""
    browser = service.services.computers.get(sid)
    assert isinstance(browser, BrowserComputer)
    marker = await browser.page.evaluate("() => { report({type: 'marker'}); return seq; }")
    # Reports are numbered: all of 1..marker are in, whatever order they arrived in.
    reports = await page.wait_for(
        lambda got: [r["seq"] for r in got[:marker]] == [*range(1, marker + 1)]
    )
    return reports[:marker]


def near(got: tuple[int, int], want: tuple[int, int]) -> bool:
    # Model <-> screen rounding moves a point by at most one pixel.
    return abs(got[0] - want[0]) <= 1 and abs(got[1] - want[1]) <= 1


# ------------------------------------------------------------------ the real browser


@pytest.mark.browser
async def test_a_preview_conversation_drives_the_real_page(
    service: Service, fake: FakeOpenAI, page: Page
) -> None:
    text = "hello preview"
    fake.enqueue(
        lambda r: response(
            reasoning("Focus the field first"),
            computer_call({"type": "click", **model_point(r, FIELD_CENTER), "button": "left"}),
        ),
        preview_call(lambda r: {"type": "type", "text": text}),
        preview_call(lambda r: {"type": "keypress", "keys": ["CTRL", "A"]}),
        preview_call(
            lambda r: {
                "type": "scroll",
                **model_point(r, LIST_CENTER),
                "scroll_x": 0,
                # The model's pixels, like its coordinates.
                "scroll_y": round(SCROLL_PX * advertised(r)[1] / SCREEN[1]),
            }
        ),
        preview_call(lambda r: {"type": "click", **model_point(r, SEND_CENTER), "button": "left"}),
        response(message("Sent it.")),
    )
    session = await create_session(
        service.client,
        provider="openai",
        model="computer-use-preview",
        task="Type into the field, select it, scroll the list, press Send",
        computer=browser_computer(page.url),
    )
    sid = session["id"]

    events = await read_stream(service.client, sid, params={"until": "run_end"})

    assert_gapless(events)
    kinds = types(events)
    assert kinds[-1] == "run.completed", events[-1]
    assert events[-1]["data"]["output"] == "Sent it."
    assert fake.script_errors == [] and fake.pending == 0
    requests = fake.requests
    assert len(requests) == 6
    # computer_use_preview shrinks 1280x800 to a short edge of 768: the loop advertises that.
    model = advertised(requests[0])
    assert model[1] == 768 and abs(model[0] / model[1] - SCREEN[0] / SCREEN[1]) < 0.01
    assert requests[0].body["model"] == "computer-use-preview"
    assert requests[0].body["tools"][0]["environment"] == "browser"

    calls = [e["data"] for e in events if e["type"] == "tool.call"]
    assert [c["tool"] for c in calls] == ["computer_use_preview"] * 5
    actions = [c["action"] for c in calls]
    assert [a["type"] for a in actions] == ["click", "type", "key", "scroll", "click"]
    field_at, send_at = (actions[0]["x"], actions[0]["y"]), (actions[4]["x"], actions[4]["y"])
    assert near(field_at, FIELD_CENTER) and near(send_at, SEND_CENTER)
    assert actions[2]["keys"] == ["Control", "a"]
    # Pixels become wheel notches (100 px each), scaled from the model's space to the screen.
    assert abs(actions[3]["dy"] * 100 - SCROLL_PX) <= 1 and actions[3]["dx"] == 0
    results = [e["data"] for e in events if e["type"] == "tool.result"]
    assert len(results) == 5 and not any(r["is_error"] for r in results)
    assert all((r["screenshot"]["width"], r["screenshot"]["height"]) == model for r in results)

    # What the page itself saw, at the places the model meant.
    reports = await page.wait_for(lambda got: any(r.get("target") == "send" for r in got))
    clicks = [(r["target"], (r["x"], r["y"]), r["value"]) for r in reports if r["type"] == "click"]
    assert clicks == [("field", field_at, ""), ("send", send_at, text)]
    assert [r["value"] for r in reports if r["type"] == "input"][-1] == text
    chords = [r for r in reports if r["type"] == "keyup" and r["ctrl"]]
    assert chords and chords[0]["key"] == "a" and chords[0]["selection"] == [0, len(text)]
    scrolled = [r["top"] for r in reports if r["type"] == "scroll"]
    assert scrolled and abs(scrolled[-1] - SCROLL_PX) <= 1
    # In the model's order: typed, then selected, then scrolled, then Send.
    last_input = max(r["seq"] for r in reports if r["type"] == "input")
    first_scroll = min(r["seq"] for r in reports if r["type"] == "scroll")
    assert last_input < chords[0]["seq"] < first_scroll
    assert (reports[-1]["type"], reports[-1]["target"]) == ("click", "send")

    # Each later request answers the previous call with a PNG at the advertised size,
    # chained on the previous response.
    for before, request in zip(fake.responses[:-1], requests[1:], strict=True):
        (output,) = call_outputs(request)
        (call,) = [i for i in before["output"] if i["type"] == "computer_call"]
        assert output["call_id"] == call["call_id"]
        assert screenshot_size(output) == model
        assert request.body["previous_response_id"] == before["id"]


@pytest.mark.browser
async def test_a_ga_batch_drives_the_real_page(
    service: Service, fake: FakeOpenAI, page: Page
) -> None:
    text = "hello batch"
    batch = computer_call(
        actions=[
            {"type": "click", "x": FIELD_CENTER[0], "y": FIELD_CENTER[1], "button": "left"},
            {"type": "type", "text": text},
            {"type": "click", "x": SEND_CENTER[0], "y": SEND_CENTER[1], "button": "left"},
        ]
    )
    fake.enqueue(response(reasoning("All at once"), batch), response(message("Sent it.")))
    session = await create_session(
        service.client,
        provider="openai",
        model="gpt-5.4",
        task="Type into the field and press Send",
        computer=browser_computer(page.url),
    )
    sid = session["id"]

    events = await read_stream(service.client, sid, params={"until": "run_end"})

    assert_gapless(events)
    assert types(events)[-1] == "run.completed", events[-1]
    assert fake.script_errors == [] and fake.pending == 0
    first, second = fake.requests
    assert first.body["model"] == "gpt-5.4" and first.body["tools"] == [{"type": "computer"}]
    # One call, three tool.call/tool.result pairs sharing its call_id, one screenshot at the end.
    calls = [e["data"] for e in events if e["type"] == "tool.call"]
    assert {c["call_id"] for c in calls} == {batch["call_id"]}
    assert [(c["action"]["type"], c["action"].get("x"), c["action"].get("y")) for c in calls] == [
        ("click", *FIELD_CENTER),
        ("type", None, None),
        ("click", *SEND_CENTER),
    ]
    results = [e["data"] for e in events if e["type"] == "tool.result"]
    assert [r["is_error"] for r in results] == [False] * 3
    assert [r["screenshot"] is not None for r in results] == [False, False, True]

    reports = await page.wait_for(lambda got: any(r.get("target") == "send" for r in got))
    clicks = [(r["target"], r["x"], r["y"], r["value"]) for r in reports if r["type"] == "click"]
    assert clicks == [("field", *FIELD_CENTER, ""), ("send", *SEND_CENTER, text)]
    typed = [r["value"] for r in reports if r["type"] == "input"]
    assert typed[-1] == text and len(typed) == len(text)  # key by key

    (output,) = call_outputs(second)
    assert output["call_id"] == batch["call_id"] and "acknowledged_safety_checks" not in output
    assert screenshot_size(output) == SCREEN  # the GA tool needs no scaling at 1280x800
    assert second.body["previous_response_id"] == fake.responses[0]["id"]


@pytest.mark.browser
async def test_a_click_outside_allowed_domains_waits_then_reaches_the_page(
    service: Service, fake: FakeOpenAI, page: Page
) -> None:
    click = computer_call(
        actions=[{"type": "click", "x": SEND_CENTER[0], "y": SEND_CENTER[1], "button": "left"}]
    )
    fake.enqueue(response(click), response(message("Clicked.")))
    session = await create_session(
        service.client,
        provider="openai",
        task="Press Send",
        computer=browser_computer(page.url),  # on 127.0.0.1
        safety={"allowed_domains": ["example.com"]},
    )
    sid, rid = session["id"], session["active_run_id"]

    check = await waiting_check(service, sid)
    assert check["code"] == "domain_not_allowed" and "127.0.0.1" in check["message"]
    assert check["provider_check_id"] is None and check["call_id"] == click["call_id"]
    assert check["action"]["type"] == "click"
    # The run waits: a click that ran before the wait did so before this marker.
    waiting = await reports_to_marker(service, sid, page)
    assert [r for r in waiting if r["type"] == "click"] == []

    ack = await service.client.post(f"/v1/sessions/{sid}/safety-checks/{check['id']}/acknowledge")
    assert ack.status_code == 200
    run = await wait_for_run(service.client, sid, rid)
    assert run["status"] == "completed" and run["output"] == "Clicked.", run
    # Exactly one click in all, so after the first marker: once acknowledged.
    reports = await reports_to_marker(service, sid, page)
    assert [(r["target"], r["x"], r["y"]) for r in reports if r["type"] == "click"] == [
        ("send", *SEND_CENTER)
    ]
    # The service's own check is not the provider's: nothing to acknowledge to the API.
    (output,) = call_outputs(fake.last_request)
    assert "acknowledged_safety_checks" not in output
    assert fake.script_errors == []


# ------------------------------------------------------------------ provider safety checks


async def test_a_provider_check_waits_for_acknowledgment(
    service: Service, fake: FakeOpenAI
) -> None:
    check = safety_check("irrelevant_domain")
    call = computer_call(actions=[CLICK], pending_safety_checks=[check])
    fake.enqueue(response(call), response(message("Clicked after approval.")))
    session = await create_session(service.client, provider="openai", task="click it")
    sid, rid = session["id"], session["active_run_id"]

    waiting = await read_stream(service.client, sid, stop_at="run.awaiting_safety_check")
    pending = next(e["data"] for e in waiting if e["type"] == "safety_check.pending")
    assert types(waiting).index("safety_check.pending") < types(waiting).index(
        "run.awaiting_safety_check"
    )
    found = await waiting_check(service, sid)
    assert found["id"] == pending["id"] and found["status"] == "pending"
    assert (found["provider_check_id"], found["code"], found["message"]) == (
        check["id"],
        check["code"],
        check["message"],
    )
    assert found["call_id"] == call["call_id"] and found["action"]["type"] == "click"
    run = (await service.client.get(f"/v1/sessions/{sid}/runs/{rid}")).json()
    assert run["status"] == "awaiting_safety_check"
    assert fake_computer(service, sid).actions == []  # not executed while waiting
    assert len(fake.requests) == 1

    ack = await service.client.post(f"/v1/sessions/{sid}/safety-checks/{found['id']}/acknowledge")
    assert ack.status_code == 200 and ack.json()["status"] == "acknowledged"
    done = await wait_for_run(service.client, sid, rid)
    assert done["status"] == "completed" and done["output"] == "Clicked after approval."
    assert fake_computer(service, sid).actions == [Click(x=10, y=20)]
    # The API gets back exactly the check it raised, in the answer to that call.
    (output,) = call_outputs(fake.last_request)
    assert output["call_id"] == call["call_id"]
    assert output["acknowledged_safety_checks"] == [check]
    assert fake.script_errors == []
    kinds = types(await read_stream(service.client, sid, params={"follow": "false"}))
    order = [
        kinds.index(k)
        for k in (
            "tool.call",
            "safety_check.pending",
            "run.awaiting_safety_check",
            "safety_check.acknowledged",
            "run.resumed",
            "tool.result",
            "run.completed",
        )
    ]
    assert order == sorted(order)

    for decision, body in (("acknowledge", None), ("reject", {"reason": "too late"})):
        again = await service.client.post(
            f"/v1/sessions/{sid}/safety-checks/{found['id']}/{decision}", json=body
        )
        assert again.status_code == 409, decision


async def test_an_unanswered_provider_check_times_out(
    clean_db: str, anthropic_fake: FakeAnthropic, fake: FakeOpenAI
) -> None:
    call = computer_call(actions=[CLICK], pending_safety_checks=[safety_check()])
    fake.enqueue(response(call))
    async with ServiceServer(
        openai_settings(clean_db, anthropic_fake.base_url, fake.base_url)
    ) as service:
        session = await create_session(
            service.client, provider="openai", task="t", safety={"safety_check_timeout_s": 0.5}
        )
        sid, rid = session["id"], session["active_run_id"]
        run = await wait_for_run(service.client, sid, rid, within=10)
        assert (run["status"], run["stop_reason"]) == ("cancelled", "safety_check_timeout")
        (check,) = (await service.client.get(f"/v1/sessions/{sid}/safety-checks")).json()["data"]
        assert check["status"] == "expired"
        late = await service.client.post(
            f"/v1/sessions/{sid}/safety-checks/{check['id']}/acknowledge"
        )
        assert late.status_code == 409
        assert fake_computer(service, sid).actions == []
        log = await read_stream(service.client, sid, params={"follow": "false"})
        ended = log[-1]
        assert ended["type"] == "run.cancelled" and ended["data"]["stop_reason"] == (
            "safety_check_timeout"
        )
        assert ended["data"]["last_action_executed"] is None
        assert "safety_check.expired" in types(log)
        (result,) = [e["data"] for e in log if e["type"] == "tool.result"]
        assert result["is_error"] and result["not_executed"]

        # The call was never answered: the strict fake accepts the follow-up only if the
        # conversation branched around it.
        fake.enqueue(response(message("Understood.")))
        follow = await service.client.post(f"/v1/sessions/{sid}/runs", json={"input": "go on"})
        assert follow.status_code == 202
        run = await wait_for_run(service.client, sid, follow.json()["id"])
        assert run["status"] == "completed" and run["output"] == "Understood.", run
        assert call_outputs(fake.last_request) == []
        assert fake.script_errors == []


async def test_a_restart_keeps_the_provider_check_waiting(
    clean_db: str, anthropic_fake: FakeAnthropic, fake: FakeOpenAI
) -> None:
    settings = openai_settings(clean_db, anthropic_fake.base_url, fake.base_url)
    check = safety_check("sensitive_domain")
    call = computer_call(actions=[CLICK], pending_safety_checks=[check])
    fake.enqueue(response(call), response(message("after restart")))
    async with ServiceServer(settings) as first:
        session = await create_session(first.client, provider="openai", task="t")
        sid, rid = session["id"], session["active_run_id"]
        before = await waiting_check(first, sid)
    async with ServiceServer(settings) as second:
        await wait_for_event(second.client, sid, "run.resumed")
        again = await waiting_check(second, sid)
        assert again["id"] == before["id"]  # the same check, not a new one
        assert fake_computer(second, sid).actions == []
        assert len(fake.requests) == 1  # the model is not asked again
        ack = await second.client.post(
            f"/v1/sessions/{sid}/safety-checks/{before['id']}/acknowledge"
        )
        assert ack.status_code == 200
        run = await wait_for_run(second.client, sid, rid)
        assert run["status"] == "completed" and run["output"] == "after restart", run
        assert fake_computer(second, sid).actions == [Click(x=10, y=20)]
        (output,) = call_outputs(fake.last_request)
        assert output["acknowledged_safety_checks"] == [check]
        assert fake.script_errors == []
        # The restart neither announced the call twice nor raised its check again.
        kinds = types(await read_stream(second.client, sid, params={"follow": "false"}))
        assert kinds.count("tool.call") == kinds.count("tool.result") == 1
        assert kinds.count("safety_check.pending") == 1
