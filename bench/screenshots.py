"""Screenshot latency and per-action overhead: the `browser` computer (Chromium launched by
Playwright) against the `cdp` computer (attached to a Chromium over its DevTools port),
each beside the raw Playwright call it is built on, in the same run.

    .venv/bin/python -m bench.screenshots [--shots 40] [--actions 40]

Screenshots at 1280x800 and 1920x1080 of a text-heavy page (a blank page encodes
in no time and flatters everyone): median and p90 in ms for Playwright's
page.screenshot, a plain CDP Page.captureScreenshot, and each computer's
screenshot(). Actions at 1280x800: the raw Playwright call, then each
computer's execute() (which adds the checks, the held keys and the settle that
waits for the page to react); the overhead is the difference of the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import http.server
import os
import statistics
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from playwright.async_api import Page

from app.computers.base import Action, Click, Display, Key, Move, Scroll
from app.computers.browser import BrowserComputer, BrowserPool
from app.computers.cdp import CdpComputer
from app.settings import Settings
from tests.remote_chromium import remote_chromium

SIZES = (Display(1280, 800), Display(1920, 1080))
WARM_UP = 5


def page_html() -> bytes:
    """A long page of headings, paragraphs, a table and coloured blocks: like a real site."""
    words = "the quick brown fox jumps over a lazy dog while seven wizards quietly judge".split()
    blocks = []
    for i in range(120):
        text = " ".join(words[(i + j) % len(words)] for j in range(60))
        hue = i * 37 % 360
        blocks.append(
            f"<h2>Section {i}</h2><p>{text}</p>"
            f'<div style="height:24px;background:linear-gradient(90deg,hsl({hue},70%,60%),#fff)"></div>'
        )
    rows = "".join(
        f"<tr><td>{i}</td><td>{words[i % len(words)]}</td><td>{i * 3.7:.1f}</td></tr>"
        for i in range(40)
    )
    body = "".join(blocks[:10]) + f"<table border=1>{rows}</table>" + "".join(blocks[10:])
    return f"<!doctype html><meta charset=utf-8><body style='font:15px serif'>{body}".encode()


@contextmanager
def serve(html: bytes) -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(html)))
            self.end_headers()
            self.wfile.write(html)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


async def timed(
    runs: int, calls: dict[str, Callable[[], Awaitable[object]]]
) -> dict[str, list[float]]:
    """Milliseconds per call of each variant, after a few unmeasured warm-up calls.

    The variants take turns, one call each, so that a burst of other work on the
    machine hits them all alike rather than whichever block ran at the time.
    """
    for call in calls.values():
        for _ in range(WARM_UP):
            await call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(runs):
        for name, call in calls.items():
            start = time.perf_counter()
            await call()
            samples[name].append((time.perf_counter() - start) * 1000)
    return samples


def p50_p90(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def raw_cdp_shot(page: Page) -> Callable[[], Awaitable[bytes]]:
    """A plain Page.captureScreenshot over a CDP session of the page (no speed flag)."""
    session = None

    async def shot() -> bytes:
        nonlocal session
        if session is None:
            session = await page.context.new_cdp_session(page)
        reply = await session.send("Page.captureScreenshot", {"format": "png"})
        return base64.b64decode(reply["data"])

    return shot


ACTIONS: dict[str, tuple[Action, Callable[[Page], Awaitable[None]]]] = {
    # Each action beside the raw Playwright call it comes down to.
    "click": (Click(x=640, y=420), lambda page: page.mouse.click(640, 420)),
    "move": (Move(x=700, y=300), lambda page: page.mouse.move(700, 300)),
    "key": (Key(keys=["ArrowDown"]), lambda page: page.keyboard.press("ArrowDown")),
    "scroll": (Scroll(x=640, y=400, dy=1), lambda page: page.mouse.wheel(0, 100)),
}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shots", type=int, default=40)
    parser.add_argument("--actions", type=int, default=40)
    args = parser.parse_args()
    settings = Settings()
    load = os.getloadavg()[0]  # other work on the machine skews every figure: say how much
    pool = BrowserPool(settings.chromium_path)
    shots: dict[tuple[str, Display], list[float]] = {}
    acts: dict[tuple[str, str], list[float]] = {}
    try:
        version = (await pool.browser()).version
        with serve(page_html()) as url, remote_chromium(settings.chromium_path or "") as remote:
            for display in SIZES:
                local = BrowserComputer(pool, display, start_url=url)
                await local.start()
                attached = CdpComputer(pool, remote.ws_url, display, start_url=url)
                await attached.start()
                measured = await timed(
                    args.shots,
                    {
                        "page.screenshot (Playwright)": functools.partial(
                            local.page.screenshot, type="png"
                        ),
                        "Page.captureScreenshot (raw CDP)": raw_cdp_shot(local.page),
                        "browser computer": local.screenshot,
                        "cdp computer": attached.screenshot,
                    },
                )
                shots |= {(name, display): samples for name, samples in measured.items()}
                if display == SIZES[0]:
                    for action_name, (action, raw) in ACTIONS.items():
                        measured = await timed(
                            args.actions,
                            {
                                "raw Playwright": functools.partial(raw, local.page),
                                "browser computer": functools.partial(local.execute, action),
                                "cdp computer": functools.partial(attached.execute, action),
                            },
                        )
                        acts |= {(name, action_name): v for name, v in measured.items()}
                await local.close()
                await attached.close()
                remote.reset()
    finally:
        await pool.close()
    print(
        f"Chromium {version}; {os.cpu_count()} cores; "
        f"1-min load average {load:.1f} at start, {os.getloadavg()[0]:.1f} at end"
    )
    report(shots, acts, args.shots, args.actions)


def report(
    shots: dict[tuple[str, Display], list[float]],
    acts: dict[tuple[str, str], list[float]],
    n_shots: int,
    n_actions: int,
) -> None:
    print(
        f"Screenshot latency, ms (PNG of a text-heavy page; {n_shots} shots after {WARM_UP} warm-up)"
    )
    header = "".join(f"{f'{d.width}x{d.height} p50':>18}{'p90':>8}" for d in SIZES)
    print(f"{'':34}{header}")
    for name in dict.fromkeys(name for name, _ in shots):
        cells = "".join(
            f"{p50_p90(shots[name, d])[0]:>18.1f}{p50_p90(shots[name, d])[1]:>8.1f}" for d in SIZES
        )
        print(f"{name:34}{cells}")
    print()
    print(
        f"Per-action latency at 1280x800, ms: median (p90) of {n_actions}; overhead = computer - raw"
    )
    columns = ("raw Playwright", "browser computer", "cdp computer")
    print(
        f"{'action':10}"
        + "".join(f"{c:>22}" for c in columns)
        + f"{'overhead browser':>20}{'overhead cdp':>16}"
    )
    for action in ACTIONS:
        medians = [p50_p90(acts[c, action]) for c in columns]
        cells = "".join(f"{f'{m:.1f} ({p:.1f})':>22}" for m, p in medians)
        raw = medians[0][0]
        print(f"{action:10}{cells}{medians[1][0] - raw:>+20.1f}{medians[2][0] - raw:>+16.1f}")


if __name__ == "__main__":
    asyncio.run(main())
