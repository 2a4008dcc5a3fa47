"""Files and the browser computer: downloads and file choosers are refused and the model
is told so; Chromium writes nothing outside temporary directories."""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.computers.base import Click, CursorPosition, Display, Wait
from app.computers.browser import BrowserComputer, BrowserPool
from app.computers.browser_pool import HOME_PREFIX

pytestmark = pytest.mark.browser

# Where the page puts its controls (absolute, border-box).
SAVE = (110, 35)  # <a download>: left 20, top 20, 180x30
ATTACHMENT = (110, 85)  # a link whose answer is an attachment: left 20, top 70, 180x30
UPLOAD = (120, 135)  # <input type=file>: left 20, top 120, 200x30

FILES_HTML = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>files</title>
<style>
  html, body { margin: 0; padding: 0; font: 16px sans-serif; }
  a, input { position: absolute; display: block; box-sizing: border-box; margin: 0;
             left: 20px; width: 180px; height: 30px; }
  #save { top: 20px; } #attachment { top: 70px; } #upload { top: 120px; width: 200px; }
</style></head>
<body>
  <a id="save" href="/report.csv" download>save the report</a>
  <a id="attachment" href="/invoice">get the invoice</a>
  <input id="upload" type="file">
  <script>
    window.__picked = [];
    const upload = document.getElementById("upload");
    for (const type of ["change", "cancel"]) {
      upload.addEventListener(type, () => window.__picked.push(type));
    }
  </script>
</body></html>
"""


class _FilesHandler(BaseHTTPRequestHandler):
    """The page, a file it links with `download`, and a URL answered as an attachment."""

    def do_GET(self) -> None:
        routes = {
            "/files.html": ("text/html; charset=utf-8", None, FILES_HTML),
            "/report.csv": ("text/csv", None, b"a,b\n1,2\n"),
            "/invoice": ("application/pdf", 'attachment; filename="invoice.pdf"', b"%PDF-1.4\n"),
        }
        if self.path not in routes:
            self.send_error(404)
            return
        content_type, disposition, body = routes[self.path]
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        if disposition:
            self.send_header("Content-Disposition", disposition)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean


@pytest.fixture(scope="module")
def files_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FilesHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/files.html"
    server.shutdown()
    server.server_close()


@pytest.fixture
async def files_page(browser_pool: BrowserPool, files_url: str) -> AsyncIterator[BrowserComputer]:
    computer = BrowserComputer(browser_pool, Display(800, 600), start_url=files_url)
    await computer.start()
    yield computer
    await computer.close()


async def test_a_download_is_refused_and_the_model_told(
    files_page: BrowserComputer, files_url: str
) -> None:
    output = (await files_page.execute(Click(x=SAVE[0], y=SAVE[1]))).output
    if output is None:
        # Chromium announces an <a download> only once the server has answered (no request
        # or navigation event comes first), which may be after the click's settle: then the
        # note comes with the next action.
        output = (await files_page.execute(Wait(seconds=0.5))).output
    assert output == (
        "The page started a download of 'report.csv'; "
        "downloads are not supported and it was discarded."
    )
    assert await files_page.current_url() == files_url
    assert (await files_page.execute(CursorPosition())).output == f"X={SAVE[0]}, Y={SAVE[1]}"


async def test_a_navigation_answered_with_an_attachment_is_refused_without_waiting(
    files_page: BrowserComputer, files_url: str
) -> None:
    started = time.monotonic()
    result = await files_page.execute(Click(x=ATTACHMENT[0], y=ATTACHMENT[1]))
    # The navigation became a download: the action does not wait for a page that never comes.
    assert time.monotonic() - started < files_page.settle_timeout_s
    assert result.output == (
        "The page started a download of 'invoice.pdf'; "
        "downloads are not supported and it was discarded."
    )
    assert await files_page.current_url() == files_url


async def test_a_file_chooser_is_dismissed_and_the_model_told(
    files_page: BrowserComputer,
) -> None:
    result = await files_page.execute(Click(x=UPLOAD[0], y=UPLOAD[1]))
    assert result.output == (
        "The page opened a file chooser; uploading files is not supported, so it was dismissed."
    )
    # Cancelled as a person pressing Esc would: the page hears `cancel`, and no file.
    page = files_page.page
    await page.wait_for_function("window.__picked.length > 0", timeout=2000)
    assert await page.evaluate("window.__picked") == ["cancel"]
    assert await page.evaluate("document.getElementById('upload').files.length") == 0
    assert (await files_page.execute(CursorPosition())).output == f"X={UPLOAD[0]}, Y={UPLOAD[1]}"


def _read(pid: int, name: str) -> list[str]:
    """A NUL-separated /proc file of the process (its environ, its cmdline)."""
    with open(f"/proc/{pid}/{name}", "rb") as f:
        return [item.decode(errors="replace") for item in f.read().split(b"\0") if item]


def _environ(pid: int) -> dict[str, str]:
    return dict(pair.partition("=")[::2] for pair in _read(pid, "environ"))


def _processes_with_home(home: str) -> dict[int, tuple[dict[str, str], list[str]]]:
    """pid -> (environment, arguments) of every process whose HOME is `home`."""
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                environ = _environ(int(name))
                if environ.get("HOME") == home:
                    found[int(name)] = (environ, _read(int(name), "cmdline"))
            except OSError:
                continue  # it exited, or is not ours
    return found


def _left_behind(home: str, names: tuple[str, ...]) -> list[str]:
    """Files with these names where a download could have landed."""
    places = [os.path.join(home, "**"), os.path.expanduser("~/Downloads"), os.getcwd()]
    return [
        path
        for name in names
        for where in places
        for path in glob.glob(os.path.join(where, name), recursive=True)
    ]


async def test_chromium_writes_only_in_temporary_directories(
    chromium_path: str, files_url: str
) -> None:
    temp = tempfile.gettempdir()
    # This process's pools' (other test runs on the machine have their own).
    ours = os.path.join(temp, f"{HOME_PREFIX}{os.getpid()}-*")
    homes_before = set(glob.glob(ours))
    pool = BrowserPool(chromium_path)
    try:
        computer = BrowserComputer(pool, Display(800, 600), start_url=files_url)
        await computer.start()
        (home,) = set(glob.glob(ours)) - homes_before
        # Chromium (and every helper it started) runs with HOME in the pool's directory,
        # and keeps its profile in a temporary one.
        found = _processes_with_home(home)
        assert found, "no process runs with the pool's HOME"
        for environ, args in found.values():
            assert environ["XDG_CONFIG_HOME"].startswith(home + os.sep)
            assert environ["XDG_CACHE_HOME"].startswith(home + os.sep)
            for arg in args:
                if arg.startswith("--user-data-dir="):
                    assert arg.removeprefix("--user-data-dir=").startswith(temp + os.sep), arg

        await computer.execute(Click(x=SAVE[0], y=SAVE[1]))
        await computer.execute(Click(x=ATTACHMENT[0], y=ATTACHMENT[1]))
        await computer.close()
        # Refused downloads leave no file anywhere Chromium could have put one.
        assert _left_behind(home, ("report.csv", "invoice.pdf")) == []
    finally:
        await pool.close()
    assert glob.glob(home) == []  # removed with the pool


async def test_a_home_left_by_a_killed_service_is_removed_by_the_next(chromium_path: str) -> None:
    temp = tempfile.gettempdir()
    # A pid no process has any more: a child that has exited and been reaped.
    child = await asyncio.create_subprocess_exec("true")
    await child.wait()
    stale = tempfile.mkdtemp(prefix=f"{HOME_PREFIX}{child.pid}-", dir=temp)
    live = tempfile.mkdtemp(prefix=f"{HOME_PREFIX}{os.getpid()}-", dir=temp)
    pool = BrowserPool(chromium_path)
    try:
        await pool.browser()
        assert glob.glob(stale) == [] and glob.glob(live) == [live]
    finally:
        await pool.close()
        shutil.rmtree(live)
