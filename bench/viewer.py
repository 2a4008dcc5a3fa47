"""The viewer and EventSource in real Chromium, against the real service in its own process.

    .venv/bin/python -m bench.viewer [--loads 10] [--events 10000] [--rate 100] [--seconds 10]

1. Page load -> first screenshot shown: the viewer of a finished session (a stored
   screenshot) opened `--loads` times in fresh pages; the time from navigation start to
   the screenshot's `load` (the page's `viewer:first-screenshot` performance mark),
   beside the baseline of the same screenshot URL opened alone.
2. The viewer of a session of `--events` events: time until its last event is shown,
   then Chromium's performance metrics (JS heap after a forced GC, DOM nodes), beside
   the viewer of a session with one event.
3. EventSource delivery: one session publishing `--rate` events/s for `--seconds`
   (through the service's EventLog: committed, then streamed), received at once by a
   page's `new EventSource(...)` and by the Python httpx-sse client: delivered rate and
   publish -> handler latency (p50, p99, max). The browser's clock is its wall clock
   (performance.timeOrigin + now()), mapped onto CLOCK_MONOTONIC with the offset this
   process measures; both processes share that clock.

Servers: bench._fake_provider + bench._service for 1 (a run that takes screenshots),
bench._servers `service` for 2 and 3 (its /bench/fill and /bench/publish routes).
SQLite in temp dirs. Exits non-zero on a lost, duplicated or out-of-order event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from httpx_sse import aconnect_sse
from playwright.async_api import Browser, Page, async_playwright

from app.computers.browser_pool import CHROMIUM_ARGS
from app.settings import Settings
from bench import _harness as h
from bench._client import ServerProcess, pct


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    path = Settings().chromium_path
    if not path:
        raise SystemExit("Chromium not found: install Debian's chromium or set CHROMIUM_PATH")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=path, headless=True, args=list(CHROMIUM_ARGS)
        )
        try:
            yield browser
        finally:
            await browser.close()


async def viewer_url(http: httpx.AsyncClient, sid: str) -> str:
    token = await http.post(f"/v1/sessions/{sid}/tokens", json={"scope": "read"})
    if token.status_code != 201:
        raise SystemExit(f"token: {token.status_code} {token.text}")
    return f"{http.base_url}".rstrip("/") + token.json()["viewer_url"]


async def wait_until(page: Page, expression: str, within: float = 60.0) -> None:
    """Poll `expression` in the page (wait_for_function would compile it with eval, which
    the viewer's Content-Security-Policy forbids)."""
    deadline = time.monotonic() + within
    while not await page.evaluate(expression):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {expression}")
        await asyncio.sleep(0.02)


def ms(values: list[float]) -> str:
    return f"median {statistics.median(values):7.1f} ms   p90 {pct(values, 90):7.1f} ms"


# ---- 1. page load -> first screenshot -----------------------------------------------------


async def first_screenshot(browser: Browser, loads: int) -> None:
    url = await h.sqlite_url()
    async with (
        h.fake_provider(0.0, 3) as provider,
        h.service(url, provider.url) as service,
        h.client(service.url) as http,
    ):
        sid = await h.create_session(http, {})
        stream = await asyncio.wait_for(h.subscribe(http, h.Stream(sid)), 60)
        shots = [
            e["data"]["screenshot"]
            for _, e in stream.events
            if e["type"] == "tool.result" and e["data"].get("screenshot")
        ]
        if not shots:
            raise SystemExit("the run took no screenshot")
        page_url = await viewer_url(http, sid)
        image_url = service.url + shots[-1]["url"]
        viewer: list[float] = []
        alone: list[float] = []
        for _ in range(loads):
            context = await browser.new_context()
            page = await context.new_page()
            await page.goto(page_url)
            await wait_until(
                page, "performance.getEntriesByName('viewer:first-screenshot').length > 0"
            )
            viewer.append(
                await page.evaluate(
                    "performance.getEntriesByName('viewer:first-screenshot')[0].startTime"
                )
            )
            await context.close()
            context = await browser.new_context()
            page = await context.new_page()
            await page.goto(image_url, wait_until="load")
            alone.append(
                await page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")
            )
            await context.close()
    print(f"1. page load -> first screenshot shown ({loads} loads, a stored screenshot)")
    print(f"   viewer page         {ms(viewer)}")
    print(f"   the image alone     {ms(alone)}   (baseline: the screenshot URL opened by itself)")


# ---- 2. a long session: time to show it, memory ---------------------------------------------


async def open_viewer(browser: Browser, url: str, last_seq: int) -> tuple[float, dict[str, float]]:
    context = await browser.new_context()
    page = await context.new_page()
    cdp = await context.new_cdp_session(page)
    await cdp.send("Performance.enable")  # counts (layouts...) from here on
    started = time.monotonic()
    await page.goto(url)
    await page.wait_for_selector(f"[role=log] [data-seq='{last_seq}']", timeout=120_000)
    shown_s = time.monotonic() - started
    await asyncio.sleep(1.0)  # let the page settle before it is measured
    await cdp.send("HeapProfiler.collectGarbage")
    result = await cdp.send("Performance.getMetrics")
    found = {m["name"]: m["value"] for m in result["metrics"]}
    rows = await page.eval_on_selector_all("[role=log] [data-seq]", "(rows) => rows.length")
    found["rows"] = rows
    await context.close()
    return shown_s, found


async def long_session(browser: Browser, server: ServerProcess, events: int) -> None:
    async with h.client(server.url) as http:
        # No task: session.created only, and the filled one gets nothing but the fill.
        small, sid = [
            (await http.post("/v1/sessions", json={"provider": "anthropic"})).json()["id"]
            for _ in range(2)
        ]
        filled = await http.post("/bench/fill", json={"session": sid, "count": events})
        if filled.status_code != 200:
            raise SystemExit(f"fill: {filled.status_code} {filled.text}")
        base_s, base = await open_viewer(browser, await viewer_url(http, small), 1)
        long_s, long = await open_viewer(browser, await viewer_url(http, sid), events + 1)
    print(f"2. the viewer of a session of {events + 1} events, beside one of 1 event")
    for label, shown_s, m in (("1 event", base_s, base), (f"{events + 1} events", long_s, long)):
        print(
            f"   {label:>12}: shown in {shown_s * 1000:7.0f} ms   JS heap used "
            f"{m['JSHeapUsedSize'] / 2**20:6.1f} MiB (total {m['JSHeapTotalSize'] / 2**20:5.1f})"
            f"   DOM nodes {m['Nodes']:6.0f}   timeline rows {m['rows']:4.0f}"
            f"   layouts {m['LayoutCount']:5.0f}"
        )


# ---- 3. EventSource delivery at a steady rate -------------------------------------------------

RECORDER = """([path, expected]) => new Promise((resolve) => {
  window.got = [];
  const source = new EventSource(path);
  window.source = source;
  source.addEventListener('assistant.message', (e) => {
    const now = performance.timeOrigin + performance.now();
    const event = JSON.parse(e.data);
    window.got.push([event.seq, event.data.t, now]);
  });
  source.onopen = () => resolve(true);
})"""


async def python_client(
    http: httpx.AsyncClient, path: str, want: int, ready: asyncio.Event
) -> list[tuple[int, float, float]]:
    got: list[tuple[int, float, float]] = []
    async with aconnect_sse(http, "GET", path) as source:
        async for sse in source.aiter_sse():
            if not sse.data:
                ready.set()
                continue
            now = time.monotonic()
            event = json.loads(sse.data)
            got.append((event["seq"], event["data"]["t"], now))
            if len(got) >= want:
                return got
    return got


def clock_offset() -> float:
    """Wall clock minus CLOCK_MONOTONIC, in seconds (the smallest of a few readings)."""
    samples = []
    for _ in range(5):
        before = time.monotonic()
        wall = time.time()
        after = time.monotonic()
        samples.append((after - before, wall - (before + after) / 2))
    return min(samples)[1]


def report(label: str, got: list[tuple[int, float, float]], first_seq: int, want: int) -> None:
    seqs = [seq for seq, _, _ in got]
    if seqs != list(range(first_seq, first_seq + want)):
        raise SystemExit(f"{label}: lost, duplicated or out-of-order events")
    latencies = [(arrived - t) * 1000 for _, t, arrived in got]
    span = max(arrived for _, _, arrived in got) - min(t for _, t, _ in got)
    print(
        f"   {label:<22} {len(got) / span:6.1f} events/s   latency p50 "
        f"{pct(latencies, 50):6.2f} ms   p99 {pct(latencies, 99):6.2f} ms   "
        f"max {max(latencies):6.2f} ms"
    )


async def delivery(browser: Browser, server: ServerProcess, rate: float, seconds: float) -> None:
    want = int(rate * seconds)
    async with h.client(server.url) as http:
        sid = (await http.post("/v1/sessions", json={"provider": "anthropic"})).json()["id"]
        path = f"/v1/sessions/{sid}/events?after=1"
        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(server.url + "/healthz")  # any page of the service's origin
        await page.evaluate(RECORDER, [path, want])
        ready = asyncio.Event()
        python = asyncio.create_task(python_client(http, path, want, ready))
        await asyncio.wait_for(ready.wait(), 30)
        offset = clock_offset()
        published = await http.post(
            "/bench/publish", json={"sessions": [sid], "rate": rate, "seconds": seconds}
        )
        if published.status_code != 200:
            raise SystemExit(f"publish: {published.status_code} {published.text}")
        from_python = await asyncio.wait_for(python, seconds + 60)
        await wait_until(page, f"window.got.length >= {want}")
        raw = await page.evaluate("window.got")
        await context.close()
    offset = (offset + clock_offset()) / 2
    from_browser = [(seq, t, wall / 1000 - offset) for seq, t, wall in raw]
    print(f"3. delivery of {want} events at {rate:.0f} events/s (publish -> handler)")
    report("Chromium EventSource", from_browser, 2, want)
    report("Python httpx-sse", from_python, 2, want)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--loads", type=int, default=10)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    async with chromium() as browser:
        await first_screenshot(browser, args.loads)
        async with ServerProcess("service", await h.sqlite_url()) as server:
            await long_session(browser, server, args.events)
            await delivery(browser, server, args.rate, args.seconds)


if __name__ == "__main__":
    asyncio.run(main())
