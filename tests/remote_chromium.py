"""A Chromium of its own with a remote debugging port: what a cdp computer attaches to.

It stands in for a provider's browser (Browserbase, Steel, Kernel...): started
outside the service, reached only by its DevTools URL. Always killed on exit,
with every helper process it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.computers.browser_pool import CHROMIUM_ARGS

START_TIMEOUT_S = 20.0
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


@dataclass
class RemoteChromium:
    process: subprocess.Popen[bytes]
    ws_url: str  # the browser's own DevTools URL, as Chromium prints it

    @property
    def http_url(self) -> str:
        """The DevTools HTTP endpoint (http://127.0.0.1:port), the other form cdp_url takes."""
        port = re.search(r":(\d+)/", self.ws_url)
        assert port, self.ws_url
        return f"http://127.0.0.1:{port.group(1)}"

    def running(self) -> bool:
        return self.process.poll() is None

    def _get(self, path: str, method: str = "GET") -> Any:
        request = urllib.request.Request(self.http_url + path, method=method)
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read() or b"null")

    def pages(self) -> list[dict[str, Any]]:
        """The page targets (tabs) the browser has open, from its HTTP endpoint."""
        return [t for t in self._get("/json/list") if t["type"] == "page"]

    def reset(self) -> None:
        """Back to one blank tab, as a provider hands a fresh browser out."""
        old = self.pages()
        self._get("/json/new?about:blank", method="PUT")
        for target in old:
            with contextlib.suppress(OSError, ValueError):  # its answer is text, not JSON
                self._get(f"/json/close/{target['id']}")

    def kill(self) -> None:
        """Kill the browser and its helpers (one process group), and reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


@contextlib.contextmanager
def remote_chromium(chromium_path: str) -> Iterator[RemoteChromium]:
    """A headless Chromium listening on a free loopback DevTools port for the block."""
    with tempfile.TemporaryDirectory(prefix="cdp-chromium-", ignore_cleanup_errors=True) as tmp:
        home = Path(tmp)
        log_path = home / "stderr.log"
        with open(log_path, "wb") as log:
            # stderr to a file, not a pipe: nobody drains a pipe once the URL is read,
            # and Chromium would block on a full one. A new session (process group)
            # lets kill() reach the zygote and renderers too. HOME keeps Chromium's
            # own files out of the user's home.
            process = subprocess.Popen(
                [
                    chromium_path,
                    *CHROMIUM_ARGS,
                    "--headless",
                    "--remote-debugging-port=0",
                    "--remote-debugging-address=127.0.0.1",
                    f"--user-data-dir={home / 'profile'}",
                    "about:blank",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env={**os.environ, "HOME": str(home)},
                start_new_session=True,
            )
        chromium = RemoteChromium(process, "")
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not (found := _LISTENING.search(log_path.read_text(errors="replace"))):
                assert chromium.running(), f"Chromium exited: {log_path.read_text()[-2000:]}"
                assert time.monotonic() < deadline, "Chromium printed no DevTools URL"
                time.sleep(0.02)
            chromium.ws_url = found.group(1)
            yield chromium
        finally:
            chromium.kill()
