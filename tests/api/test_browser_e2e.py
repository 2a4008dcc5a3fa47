"""Runs end to end over real HTTP on the real browser computer (headless Chromium).

The model is the strict fake Anthropic API; the page is served by a local HTTP
server and reports every click and keystroke it receives back to that server,
so what the page saw is read from outside the browser rather than trusted from
the service's own events. Also: one Chromium per service, no contexts or
processes left behind by closed sessions (even one closed while a run is being
started, or fifty in a row), by a crashed Chromium or by a stopped service; a
crash in the middle of a run is reported and the run goes on in a new browser.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from app.computers.scaling import png_size
from tests.api.helpers import assert_gapless, create_session, read_stream, types, wait_for_run
from tests.browser_support import Page, PageServer, require_chromium, serve_pages
from tests.conftest import Service, ServiceServer, make_settings
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    RecordedRequest,
    computer_call,
    text_message,
    tool_use_message,
    toolset_call,
)

pytestmark = pytest.mark.browser

# Where the page puts its controls (absolute, border-box: these are exact).
FIELD_CENTER = (250, 120)  # #field: left 100, top 100, 300x40
SEND_CENTER = (200, 230)  # #send: left 100, top 200, 200x60
FAR_CENTER = (1520, 915)  # #far: left 1500, top 900, 40x30; only on screens larger than WXGA

PAGE_HTML = b"""<!doctype html>
<html>
<head>
<meta charset="utf-8">
<title>form</title>
<style>
  html, body { margin: 0; padding: 0; background: #ffffff; font: 16px sans-serif; }
  button, input { position: absolute; box-sizing: border-box; margin: 0; }
  #field { left: 100px; top: 100px; width: 300px; height: 40px; }
  #send { left: 100px; top: 200px; width: 200px; height: 60px; }
  #far { left: 1500px; top: 900px; width: 40px; height: 30px; }
</style>
</head>
<body>
<input id="field" autocomplete="off">
<button id="send">Send</button>
<button id="far">Far</button>
<script>
  // Numbered, because concurrent fetches may reach the server out of order.
  let seq = 0;
  const field = document.getElementById("field");
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
</script>
</body>
</html>
"""


@pytest.fixture(scope="module")
def page_server() -> Iterator[PageServer]:
    with serve_pages({"/form.html": PAGE_HTML}) as server:
        yield server


@pytest.fixture
def page(page_server: PageServer) -> Page:
    page_server.clear()
    return Page(page_server.url("/form.html"), page_server)


@pytest.fixture(autouse=True, scope="module")
def _chromium() -> None:
    require_chromium()


def browser_computer(url: str, width: int, height: int) -> dict[str, Any]:
    return {"type": "browser", "start_url": url, "display": {"width": width, "height": height}}


def images_of(message: dict[str, Any]) -> list[dict[str, Any]]:
    """Image blocks of a request message, including those nested in tool_result blocks."""
    found: list[dict[str, Any]] = []
    for block in message["content"]:
        if block["type"] == "image":
            found.append(block)
        elif block["type"] == "tool_result":
            found.extend(b for b in block["content"] if b["type"] == "image")
    return found


def png_of(image_block: dict[str, Any]) -> tuple[int, int]:
    """The size of a base64 image block sent to the model; asserts it is a PNG."""
    source = image_block["source"]
    assert source["type"] == "base64" and source["media_type"] == "image/png"
    return png_size(base64.b64decode(source["data"]))


async def fetch_screenshot(service: Service, shot: dict[str, Any]) -> tuple[int, int]:
    response = await service.client.get(shot["url"])
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    return png_size(response.content)


# ------------------------------------------------------------------ a run on the real page


async def test_a_run_drives_the_real_page_over_http(
    service: Service, strict_fake: FakeAnthropic, page: Page
) -> None:
    strict_fake.enqueue(
        tool_use_message(computer_call("left_click", coordinate=list(FIELD_CENTER)), text="Focus"),
        tool_use_message(computer_call("type", text="hello world")),
        tool_use_message(computer_call("left_click", coordinate=list(SEND_CENTER))),
        text_message("Sent hello world."),
    )
    session = await create_session(
        service.client,
        task="Type hello world into the field and press Send",
        computer=browser_computer(page.url, 1280, 800),
    )
    sid = session["id"]

    events = await read_stream(service.client, sid, params={"until": "run_end"})

    assert_gapless(events)
    kinds = types(events)
    assert kinds[:3] == ["session.created", "run.queued", "run.started"]
    assert kinds[-1] == "run.completed" and events[-1]["data"]["output"] == "Sent hello world."
    assert kinds.count("turn.started") == kinds.count("turn.completed") == 4
    assert [e["data"]["text"] for e in events if e["type"] == "assistant.message"] == [
        "Focus",
        "Sent hello world.",
    ]
    calls = [e["data"]["action"] for e in events if e["type"] == "tool.call"]
    assert [(c["type"], c.get("x"), c.get("y"), c.get("text")) for c in calls] == [
        ("click", *FIELD_CENTER, None),
        ("type", None, None, "hello world"),
        ("click", *SEND_CENTER, None),
    ]
    results = [e["data"] for e in events if e["type"] == "tool.result"]
    assert len(results) == 3 and not any(r["is_error"] for r in results)
    for result in results:
        shot = result["screenshot"]
        assert shot["url"] == f"/v1/sessions/{sid}/screenshots/{shot['id']}"
        assert shot["media_type"] == "image/png" and shot["page_url"] == page.url
        assert (shot["width"], shot["height"]) == (1280, 800)
        assert await fetch_screenshot(service, shot) == (1280, 800)

    # What the page itself saw: the click in the field, the typing, then Send with the text in.
    reports = await page.wait_for(lambda got: any(r.get("target") == "send" for r in got))
    clicks = [(r["target"], r["x"], r["y"], r["value"]) for r in reports if r["type"] == "click"]
    assert clicks == [("field", *FIELD_CENTER, ""), ("send", *SEND_CENTER, "hello world")]
    typed = [r["value"] for r in reports if r["type"] == "input"]
    assert typed[-1] == "hello world" and len(typed) == len("hello world")  # key by key

    # The model saw real screenshots: the last request answers the Send click with a PNG.
    requests = strict_fake.requests
    assert len(requests) == 4 and strict_fake.script_errors == []
    last_user = requests[-1].body["messages"][-1]
    assert last_user["role"] == "user" and last_user["content"][0]["type"] == "tool_result"
    assert [png_of(image) for image in images_of(last_user)] == [(1280, 800)]
    session_now = (await service.client.get(f"/v1/sessions/{sid}")).json()
    assert session_now["status"] == "idle" and session_now["last_run"]["status"] == "completed"


@pytest.mark.parametrize(
    ("tool_version", "call"),
    [("computer_toolset_20260801", toolset_call), ("computer_20250124", computer_call)],
)
async def test_other_anthropic_wire_formats_drive_the_page(
    service: Service,
    strict_fake: FakeAnthropic,
    page: Page,
    tool_version: str,
    call: Callable[..., dict[str, Any]],
) -> None:
    """The GA toolset (one tool_use per action, toolset_name) and an older beta tool,
    chosen by options.tool_version, through the whole service."""
    strict_fake.enqueue(
        tool_use_message(call("left_click", coordinate=list(FIELD_CENTER))),
        tool_use_message(call("type", text="ga")),
        tool_use_message(call("left_click", coordinate=list(SEND_CENTER))),
        text_message("done"),
    )
    session = await create_session(
        service.client,
        task="fill and send",
        computer=browser_computer(page.url, 1280, 800),
        options={"tool_version": tool_version},
    )
    run = await wait_for_run(service.client, session["id"], session["active_run_id"])
    assert run["status"] == "completed", run
    assert strict_fake.script_errors == []
    first = strict_fake.requests[0].body
    assert first["tools"][0]["type"] == tool_version
    if tool_version == "computer_toolset_20260801":
        results = [
            b
            for b in strict_fake.requests[1].body["messages"][-1]["content"]
            if b["type"] == "tool_result"
        ]
        assert results[0]["toolset_name"] == "computer"
    reports = await page.wait_for(lambda got: any(r.get("target") == "send" for r in got))
    clicks = [(r["target"], r["x"], r["y"], r["value"]) for r in reports if r["type"] == "click"]
    assert clicks == [("field", *FIELD_CENTER, ""), ("send", *SEND_CENTER, "ga")]


async def test_a_larger_screen_is_scaled_for_the_model_and_clicks_land_right(
    service: Service, strict_fake: FakeAnthropic, page: Page
) -> None:
    screen = (1920, 1080)
    advertised: dict[str, int] = {}

    def click_far(request: RecordedRequest) -> dict[str, Any]:
        # The model answers in the space the tool definition advertises, as the real one does.
        tool = request.body["tools"][0]
        width, height = tool["display_width_px"], tool["display_height_px"]
        advertised.update(width=width, height=height)
        model_x = round(FAR_CENTER[0] * width / screen[0])
        model_y = round(FAR_CENTER[1] * height / screen[1])
        advertised.update(x=model_x, y=model_y)
        return tool_use_message(computer_call("left_click", coordinate=[model_x, model_y]))

    strict_fake.enqueue(click_far, text_message("Clicked Far."))
    session = await create_session(
        service.client, task="Press Far", computer=browser_computer(page.url, *screen)
    )
    sid = session["id"]
    events = await read_stream(service.client, sid, params={"until": "run_end"})
    assert types(events)[-1] == "run.completed", events[-1]
    assert strict_fake.script_errors == []

    model = (advertised["width"], advertised["height"])
    assert model[0] < screen[0] and model[1] < screen[1]
    assert abs(model[0] / model[1] - screen[0] / screen[1]) < 0.01  # same aspect, not stretched
    # Every screenshot the model gets is at the advertised size, the first one included.
    first_images = images_of(strict_fake.requests[0].body["messages"][0])
    assert [png_of(image) for image in first_images] == [model]
    assert [
        png_of(image) for image in images_of(strict_fake.last_request.body["messages"][-1])
    ] == [model]
    result = next(e["data"] for e in events if e["type"] == "tool.result")
    shot = result["screenshot"]
    assert (shot["width"], shot["height"]) == model == await fetch_screenshot(service, shot)
    assert shot["page_url"] == page.url

    # The model's point, mapped back to the screen, is where the page received the click.
    expected = (
        advertised["x"] * screen[0] / model[0],
        advertised["y"] * screen[1] / model[1],
    )
    call = next(e["data"]["action"] for e in events if e["type"] == "tool.call")
    reports = await page.wait_for(lambda got: any(r["type"] == "click" for r in got))
    (click,) = [r for r in reports if r["type"] == "click"]
    assert click["target"] == "far"
    assert (click["x"], click["y"]) == (call["x"], call["y"])
    assert abs(click["x"] - expected[0]) <= 1 and abs(click["y"] - expected[1]) <= 1


# ------------------------------------------------------------------ no leaks


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    comm: str  # /proc/<pid>/stat's command name (the executable's name, at most 15 characters)
    cmdline: str  # arguments joined by spaces (Chromium's helpers rewrite theirs that way)
    exe: str | None  # None: the link is not ours to read (EACCES/EPERM), see processes()

    @property
    def program(self) -> str:
        """What it runs: its exe link or, when that is not readable, the program its command
        line names (an absolute path for Chromium and its helpers), else its command name."""
        if self.exe is not None:
            return self.exe
        program = self.cmdline.split(" ", 1)[0]
        return os.path.realpath(program) if program.startswith("/") else self.comm


# Reading /proc/<pid>/... of a process that is gone fails with ENOENT (FileNotFoundError)
# or ESRCH (ProcessLookupError); nothing else means it exited. (A kernel thread's exe link
# is ENOENT too: it has no executable, and is no process of ours either.)
GONE = (FileNotFoundError, ProcessLookupError)


def processes() -> dict[int, Proc]:
    """Every live process visible in /proc (zombies excluded: they hold nothing but a pid).

    A process whose exe link cannot be read for lack of permission (EACCES/EPERM) is still
    listed, with exe None: a leak check must count it, not skip it as if it had exited. Without
    CAP_SYS_PTRACE (a container's default, even for root) that is any process of another user,
    a non-dumpable one, or one holding capabilities the reader lacks: Chromium's browser
    process, zygotes and network service, when they were started with more than we have.
    """
    found: dict[int, Proc] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="utf-8", errors="replace") as f:
                # The command name is in parentheses and may contain spaces: split around it.
                head, tail = f.read().rsplit(")", 1)
                state, ppid = tail.split()[:2]
            if state == "Z":
                continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            exe: str | None
            try:
                # ENOENT also for a process already tearing down its memory (a Chromium
                # helper exiting at that moment): it exited while we looked.
                exe = os.readlink(f"/proc/{name}/exe")
            except PermissionError:
                exe = None
        except GONE:
            continue  # it exited while we looked
        found[int(name)] = Proc(int(name), int(ppid), head.split("(", 1)[1], cmdline, exe)
    return found


def descends_from(procs: dict[int, Proc], pid: int, ancestor: int) -> bool:
    seen: set[int] = set()
    while pid in procs and pid not in seen:
        if pid == ancestor:
            return True
        seen.add(pid)
        pid = procs[pid].ppid
    return pid == ancestor


def browser_processes(procs: dict[int, Proc]) -> set[int]:
    """Chromium browser processes started from this test process (through Playwright's
    driver). The browser process is the one with a --user-data-dir and no --type=:
    Chromium's helpers (zygote, renderer, gpu, utility) all carry a --type=."""
    me = os.getpid()
    return {
        p.pid
        for p in procs.values()
        if "--user-data-dir=" in p.cmdline
        and "--type=" not in p.cmdline
        and descends_from(procs, p.pid, me)
    }


def user_data_dir(proc: Proc) -> str:
    match = re.search(r"--user-data-dir=(\S+)", proc.cmdline)
    assert match, proc.cmdline
    return match.group(1)


def tree(procs: dict[int, Proc], root: int) -> set[int]:
    return {pid for pid in procs if descends_from(procs, pid, root)}


def renderers(procs: dict[int, Proc], pids: set[int]) -> set[int]:
    return {pid for pid in pids if "--type=renderer" in procs[pid].cmdline}


async def eventually(check: Callable[[], bool], what: str, within: float = 5.0) -> None:
    # Chromium's helper processes exit asynchronously after what closed them.
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


def chromium_home(root: int) -> str:
    """The HOME the pool gave its Chromium (a temporary directory of its own)."""
    with open(f"/proc/{root}/environ", "rb") as f:
        environ = dict(item.partition(b"=")[::2] for item in f.read().split(b"\0") if item)
    return environ[b"HOME"].decode()


def the_browser(before: set[int]) -> tuple[int, dict[int, Proc]]:
    """The one Chromium browser process this test's service runs, and the process table."""
    procs = processes()
    launched = browser_processes(procs) - before
    assert len(launched) == 1, f"expected one Chromium for all sessions, got {launched}"
    (root,) = launched
    return root, procs


async def nothing_left_of(roots: set[int], driver: int, dirs: set[str], before: set[int]) -> None:
    """After the service stopped: its Chromiums, every helper and Playwright's driver are
    gone, and so are the temporary directories (profiles, Chromium's HOME) they used."""

    def all_gone() -> bool:
        procs = processes()
        return (
            not roots & set(procs)
            and driver not in procs
            and not any(f"--user-data-dir={d}" in p.cmdline for p in procs.values() for d in dirs)
            and browser_processes(procs) <= before
            and not any(os.path.exists(d) for d in dirs)
        )

    await eventually(all_gone, "Chromium processes (or their directories) outlived the service")


async def test_closed_sessions_and_a_stopped_service_leave_no_browser_behind(
    clean_db: str, strict_fake: FakeAnthropic, page: Page
) -> None:
    sessions = 10
    strict_fake.enqueue(*[text_message("ok")] * sessions)
    # Another test's Chromium (tests/computers keeps one per pytest session) is not ours.
    before = browser_processes(processes())

    async with ServiceServer(make_settings(clean_db, strict_fake.base_url)) as service:
        pool = service.services.browsers

        async def tiny_run(index: int) -> str:
            session = await create_session(
                service.client, task=f"tiny {index}", computer=browser_computer(page.url, 800, 600)
            )
            # Ten browser contexts at once: a generous bound on a loaded 2-core machine.
            run = await wait_for_run(
                service.client, session["id"], session["active_run_id"], within=90
            )
            assert run["status"] == "completed" and run["output"] == "ok", run
            return str(session["id"])

        sids = await asyncio.gather(*(tiny_run(i) for i in range(sessions)))
        assert strict_fake.script_errors == [] and strict_fake.pending == 0
        assert len(pool.contexts) == sessions and len(service.services.computers) == sessions
        # Each run opened the page and showed it to the model before answering.
        first_images = [images_of(r.body["messages"][0]) for r in strict_fake.requests]
        assert [[png_of(image) for image in images] for images in first_images] == [
            [(800, 600)]
        ] * sessions

        procs = processes()
        launched = browser_processes(procs) - before
        assert len(launched) == 1, f"expected one Chromium for all sessions, got {launched}"
        (root,) = launched
        profile = user_data_dir(procs[root])
        chromium = procs[root].program
        driver = procs[root].ppid
        assert "run-driver" in procs[driver].cmdline  # Playwright's driver launched it
        ours = tree(procs, root)
        assert renderers(procs, ours)  # the sessions' pages live in this tree
        assert all(procs[pid].program == chromium for pid in ours), {
            pid: (procs[pid].program, procs[pid].cmdline[:120]) for pid in ours
        }
        # Every process using this profile belongs to the one tree.
        assert {p.pid for p in procs.values() if f"--user-data-dir={profile}" in p.cmdline} <= ours

        closed = await asyncio.gather(
            *(service.client.delete(f"/v1/sessions/{sid}") for sid in sids)
        )
        assert [(r.status_code, r.json()["status"]) for r in closed] == [(200, "closed")] * sessions
        assert pool.contexts == [] and len(service.services.computers) == 0

        def pages_gone() -> bool:
            procs = processes()
            return browser_processes(procs) - before == {root} and not renderers(
                procs, tree(procs, root)
            )

        await eventually(pages_gone, "renderer processes outlived their closed sessions")

    # Stopping the service stops its Chromium, every helper and Playwright's driver,
    # and Playwright removes the temporary profile.
    await nothing_left_of({root}, driver, {profile}, before)


async def test_a_run_started_while_the_session_closes_leaves_no_context(
    service: Service, anthropic_fake: FakeAnthropic, page: Page
) -> None:
    # POST /runs racing DELETE: whichever wins, the session ends closed with no run
    # active and no browser context left open in the shared Chromium.
    async def race() -> str:
        session = await create_session(
            service.client, computer=browser_computer(page.url, 800, 600)
        )
        sid = session["id"]
        started, closed = await asyncio.gather(
            service.client.post(f"/v1/sessions/{sid}/runs", json={"input": "go"}),
            service.client.delete(f"/v1/sessions/{sid}"),
        )
        assert closed.status_code == 200 and closed.json()["status"] == "closed"
        assert started.status_code in (202, 409), started.text
        return str(sid)

    sids = await asyncio.gather(*(race() for _ in range(8)))
    await eventually(lambda: service.services.runner.active_count == 0, "runs still active")
    assert service.services.browsers.contexts == [] and len(service.services.computers) == 0
    for sid in sids:
        got = (await service.client.get(f"/v1/sessions/{sid}")).json()
        assert got["status"] == "closed" and got["active_run_id"] is None, got
        log = (
            await service.client.get(f"/v1/sessions/{sid}/events", params={"format": "json"})
        ).json()["data"]
        assert log[-1]["type"] == "session.closed", types(log)


async def test_fifty_sessions_created_and_closed_leave_no_browser_behind(
    clean_db: str, strict_fake: FakeAnthropic, page: Page
) -> None:
    total, batch = 50, 5
    strict_fake.enqueue(*[text_message("ok")] * total)
    before = browser_processes(processes())

    async with ServiceServer(make_settings(clean_db, strict_fake.base_url)) as service:
        pool, computers = service.services.browsers, service.services.computers

        async def open_use_close(index: int) -> None:
            # Created without a task; a tiny run creates its browser; then closed.
            session = await create_session(
                service.client, computer=browser_computer(page.url, 400, 300)
            )
            sid = session["id"]
            started = await service.client.post(f"/v1/sessions/{sid}/runs", json={"input": "hi"})
            run = await wait_for_run(service.client, sid, started.json()["id"])
            assert run["status"] == "completed" and run["output"] == "ok", (index, run)
            closed = await service.client.delete(f"/v1/sessions/{sid}")
            assert closed.status_code == 200 and closed.json()["status"] == "closed"

        roots: set[int] = set()
        for first in range(0, total, batch):
            await asyncio.gather(*(open_use_close(i) for i in range(first, first + batch)))
            roots.add(the_browser(before)[0])
            assert pool.contexts == [] and len(computers) == 0
        assert strict_fake.script_errors == [] and strict_fake.pending == 0
        assert len(roots) == 1, f"Chromium was relaunched: {roots}"
        root, procs = the_browser(before)
        profile, home, driver = user_data_dir(procs[root]), chromium_home(root), procs[root].ppid
        await eventually(
            lambda: not renderers(processes(), tree(processes(), root)),
            "renderer processes outlived their closed sessions",
        )
    await nothing_left_of({root}, driver, {profile, home}, before)


async def test_a_crashed_browser_leaves_nothing_behind(
    clean_db: str, strict_fake: FakeAnthropic, page: Page
) -> None:
    sessions = 3
    strict_fake.enqueue(*[text_message("ok")] * (2 * sessions))
    before = browser_processes(processes())

    async with ServiceServer(make_settings(clean_db, strict_fake.base_url)) as service:
        pool = service.services.browsers

        async def tiny_run(sid: str) -> None:
            started = await service.client.post(f"/v1/sessions/{sid}/runs", json={"input": "hi"})
            run = await wait_for_run(service.client, sid, started.json()["id"])
            assert run["status"] == "completed", run

        created = [
            await create_session(service.client, computer=browser_computer(page.url, 400, 300))
            for _ in range(sessions)
        ]
        sids = [str(session["id"]) for session in created]
        await asyncio.gather(*(tiny_run(sid) for sid in sids))
        crashed, procs = the_browser(before)
        crashed_tree = tree(procs, crashed)
        crashed_profile, home = user_data_dir(procs[crashed]), chromium_home(crashed)
        driver = procs[crashed].ppid

        os.kill(crashed, signal.SIGKILL)
        # Its helpers (zygotes, renderers, utilities) follow it, and Playwright removes its
        # profile; the contexts are gone with it.
        await eventually(
            lambda: not crashed_tree & set(processes()) and not os.path.exists(crashed_profile),
            "processes (or the profile) of the crashed Chromium outlived it",
        )
        assert pool.contexts == []

        # The next runs get browsers in one new Chromium, in the same temporary HOME.
        await asyncio.gather(*(tiny_run(sid) for sid in sids))
        root, procs = the_browser(before)
        assert root != crashed and procs[root].ppid == driver and chromium_home(root) == home
        assert len(pool.contexts) == sessions
        profile = user_data_dir(procs[root])
        for sid in sids:
            assert (await service.client.delete(f"/v1/sessions/{sid}")).status_code == 200
        assert pool.contexts == [] and len(service.services.computers) == 0
        assert strict_fake.script_errors == []
    await nothing_left_of({crashed, root}, driver, {crashed_profile, profile, home}, before)


async def test_a_browser_crash_mid_run_is_an_error_and_the_run_goes_on_in_a_new_browser(
    service: Service, strict_fake: FakeAnthropic, page: Page
) -> None:
    before = browser_processes(processes())
    crashed_ = threading.Event()

    async def after_the_crash(_request: RecordedRequest) -> dict[str, Any]:
        # The model "thinks" until the test has killed Chromium.
        assert await asyncio.to_thread(crashed_.wait, 10)
        return tool_use_message(computer_call("left_click", coordinate=list(SEND_CENTER)))

    strict_fake.enqueue(
        tool_use_message(computer_call("left_click", coordinate=list(FIELD_CENTER))),
        after_the_crash,  # refused: it was chosen on the crashed browser's screen
        tool_use_message(computer_call("left_click", coordinate=list(SEND_CENTER))),
        text_message("Sent."),
    )
    session = await create_session(
        service.client, task="Press Send", computer=browser_computer(page.url, 800, 600)
    )
    sid = session["id"]
    await strict_fake.wait_for_requests(2)
    crashed, _ = the_browser(before)
    dead = service.services.computers.get(sid)
    assert dead is not None
    os.kill(crashed, signal.SIGKILL)
    await eventually(lambda: not dead.is_alive(), "Playwright did not notice the crash")
    crashed_.set()

    run = await wait_for_run(service.client, sid, session["active_run_id"])
    assert run["status"] == "completed" and run["output"] == "Sent.", run
    assert strict_fake.script_errors == []
    events = (
        await service.client.get(f"/v1/sessions/{sid}/events", params={"format": "json"})
    ).json()["data"]
    results = [e["data"] for e in events if e["type"] == "tool.result"]
    assert [r["is_error"] for r in results] == [False, True, False]
    assert results[1]["error"] == (
        f"The browser crashed and was restarted at {page.url}; "
        "this action was not run. Look at the screen again."
    )
    # The model saw the error with a screenshot of the new browser, then went on there.
    for result in results[1:]:
        assert result["screenshot"] is not None and result["screenshot"]["page_url"] == page.url
    computer = service.services.computers.get(sid)
    assert computer is not None and computer is not dead and computer.is_alive()
    assert the_browser(before)[0] != crashed
    # What the pages saw: the first click in the crashed browser, one Send in the new one.
    reports = await page.wait_for(lambda got: any(r.get("target") == "send" for r in got))
    assert sorted(r["target"] for r in reports if r["type"] == "click") == ["field", "send"]
