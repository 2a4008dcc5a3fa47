"""Cancel latency: POST .../cancel during a long model call -> `run.cancelled` at every
SSE subscriber, measured over real HTTP against the real service.

    .venv/bin/python -m bench.cancel_latency [--runs 50] [--subscribers 3]

The service runs in this process under uvicorn (fake computer, SQLite in a temp dir)
against the fake Anthropic server holding every reply for 30 s; the subscribers
are httpx-sse clients. Prints p50/p90/p99/max and exits non-zero if any
subscriber misses the event or sees a gap.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from httpx_sse import aconnect_sse

from app.db.engine import migrate
from tests.conftest import ServiceServer, make_settings
from tests.fakes.anthropic_server import FakeAnthropic, text_message


async def subscriber(client: httpx.AsyncClient, sid: str, ready: asyncio.Event) -> float:
    """Monotonic time at which run.cancelled arrived (after checking seq order)."""
    last = 0
    async with aconnect_sse(client, "GET", f"/v1/sessions/{sid}/events") as source:
        async for sse in source.aiter_sse():
            if not sse.data:
                ready.set()  # the retry: frame: connected
                continue
            event = json.loads(sse.data)
            if event["seq"] != last + 1:
                raise SystemExit(f"gap or duplicate: {last} -> {event['seq']}")
            last = event["seq"]
            if event["type"] == "run.cancelled":
                return time.monotonic()
    raise SystemExit("stream ended without run.cancelled")


async def one_run(client: httpx.AsyncClient, fake: FakeAnthropic, subscribers: int) -> float:
    fake.enqueue(text_message("never"), delay=30)
    created = await client.post(
        "/v1/sessions", json={"provider": "anthropic", "task": "wait", "computer": {"type": "fake"}}
    )
    session = created.json()
    sid = session["id"]
    readies = [asyncio.Event() for _ in range(subscribers)]
    tasks = [asyncio.create_task(subscriber(client, sid, r)) for r in readies]
    await asyncio.gather(*(r.wait() for r in readies))
    await fake.wait_for_requests(1)  # the model call is in flight
    started = time.monotonic()
    response = await client.post(f"/v1/sessions/{sid}/cancel")
    assert response.status_code == 202, response.text
    arrivals = await asyncio.gather(*tasks)
    fake.reset()
    return max(arrivals) - started


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--subscribers", type=int, default=3)
    args = parser.parse_args()
    url = f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
    await migrate(url)
    with FakeAnthropic() as fake:
        async with ServiceServer(make_settings(url, fake.base_url)) as service:
            latencies = [
                await one_run(service.client, fake, args.subscribers) for _ in range(args.runs)
            ]
    ms = [v * 1000 for v in latencies]
    print(
        f"cancel -> run.cancelled at all {args.subscribers} subscribers, {args.runs} runs: "
        f"p50 {statistics.median(ms):.1f} ms, p90 {pct(ms, 90):.1f} ms, "
        f"p99 {pct(ms, 99):.1f} ms, max {max(ms):.1f} ms (SPEC bound: 1000 ms)"
    )


if __name__ == "__main__":
    asyncio.run(main())
